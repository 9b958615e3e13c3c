"""FaceSynth text: summaries and question–answer pairs written from a clip's exact ground truth.

Summaries start from the feature dictionary's phrases (``taxonomy.features_to_phrases``) and vary the
sentence frames, the subject and the order. Every label a summary or an answer asserts is true for the
clip, and every label it denies is absent: the taxonomy's lexicon reads the text back to exactly the
clip's labels (the tests check this), so the text can supervise training and score rewards alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from favchat.data.manifest import QA, Event
from favchat.data.questions import KINDS, ask, verb_forms
from favchat.data.synth.identity import HAIR_COLOURS
from favchat.data.taxonomy import BY_NAME, GROUPS, features_to_phrases

# Labels FaceSynth renders, by group: the only ones its questions ask about.
RENDERED: dict[str, tuple[str, ...]] = {
    "appearance": ("bald", "bangs", "black_hair", "blond_hair", "gray_hair", "brown_hair", "wavy_hair", "long_hair",
                   "bushy_eyebrows", "eyeglasses", "sunglasses", "no_beard", "goatee", "mustache", "facial_hair",
                   "stubbly", "wearing_earrings", "wearing_hat", "wearing_lipstick", "wearing_necklace",
                   "pale_skin", "rosy_cheeks"),
    "action": ("close_eyes", "frown", "laugh", "look_around", "nod", "shake_head", "smile", "talk", "turn", "wink",
               "yawn", "squint", "pout"),
    "emotion": ("happy", "sad", "surprise", "neutral", "anger", "disgust", "fear"),
}

# Visible cues of each emotion as FaceSynth draws it (emotion-bearing answers for stage 3).
EMOTION_CUES: dict[str, str] = {
    "neutral": "the face stays relaxed, with level brows and a straight mouth",
    "happy": "the corners of the mouth turn up and the cheeks lift",
    "sad": "the corners of the mouth turn down and the inner ends of the brows rise",
    "surprise": "the brows go up, the eyes open wide and the mouth drops open",
    "anger": "the brows are pulled down and together and the lips press into a downturned line",
    "disgust": "the nose wrinkles, the upper lip rises on one side and the brows lower",
    "fear": "the brows rise and draw together, the eyes open wide and the mouth stretches sideways",
}

_SUBJECTS = ("The person", "This person", "The individual", "The subject")
# Appearance labels a yes/no question may ask about ("no beard" is asked as facial hair, never as a label).
_YESNO_APPEARANCE = tuple(n for n in RENDERED["appearance"] if n != "no_beard")
_WORN = ("eyeglasses", "sunglasses", "wearing_hat", "wearing_earrings", "wearing_necklace", "wearing_lipstick")


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _sentence(s: str) -> str:
    return s[0].upper() + s[1:] + ("" if s.endswith(".") else ".")


def _part(ev: Event, n_frames: int) -> str:
    mid = (ev.start + ev.end) / 2 / n_frames
    return "near the start" if mid < 0.34 else "in the middle" if mid < 0.67 else "near the end"


def _when(ev: Event, n_frames: int, fps: float) -> str:
    return f"{_part(ev, n_frames)} of the clip (from {ev.start / fps:.1f} s to {ev.end / fps:.1f} s)"


def summarise(labels: dict[str, list[str]], free_events: list[Event], emotion_start: int, n_frames: int,
              rng: np.random.Generator) -> str:
    """A short paragraph: appearance, then the actions in order, then the emotion."""
    phrases = features_to_phrases(labels)
    subj = str(rng.choice(_SUBJECTS))
    app = list(phrases["appearance"])
    rng.shuffle(app)
    frames = ("{s} with {a} appears in the video.", "The video shows a person with {a}.",
              "{s} has {a}.", "A person with {a} faces the camera.")
    out = [str(rng.choice(frames)).format(s=subj, a=_join(app))]
    acts = [BY_NAME[e.label].phrase for e in free_events]
    if acts:
        if len(acts) == 1:
            out.append(f"{subj} {acts[0]} {_part(free_events[0], n_frames)} of the clip.")
        else:
            steps = [f"first {acts[0]}"] + [f"then {a}" for a in acts[1:-1]] + [f"finally {acts[-1]}"]
            out.append(f"{subj} {', '.join(steps[:-1])} and {steps[-1]}.")
    else:
        out.append(str(rng.choice(["The head stays mostly still.", "There is little movement in the clip."])))
    emo = labels["emotion"][0]
    linked = [BY_NAME[a].phrase for a in labels["action"] if a in ("smile", "frown")]
    emo_phrase = BY_NAME[emo].phrase
    if emo == "neutral":
        out.append(str(rng.choice(["The expression stays neutral.", "Overall the person looks neutral."])))
    elif emotion_start > 0:
        extra = f" and {linked[0]}" if linked else ""
        out.append(f"Partway through, the person becomes {emo_phrase}{extra}.")
    else:
        extra = f" and {linked[0]}" if linked else ""
        out.append(str(rng.choice([f"The person looks {emo_phrase}{extra} throughout.",
                                   f"Throughout the clip the person seems {emo_phrase}{extra}."])))
    return " ".join(out)


def _hair_colour_answer(labels: set[str]) -> str:
    if "bald" in labels:
        return "The person is bald, so no hair colour shows."
    return f"The person has {BY_NAME[next(c for c in HAIR_COLOURS if c in labels)].phrase}."


def _hair_answer(labels: set[str]) -> str:
    if "bald" in labels:
        return "The person is bald, so there is no hair to describe."
    colour = next(c for c in HAIR_COLOURS if c in labels)
    extra = [BY_NAME[x].phrase for x in ("long_hair", "wavy_hair", "bangs") if x in labels]
    return f"The person has {BY_NAME[colour].phrase}" + (f", with {_join(extra)}" if extra else "") + "."


def _accessories_answer(labels: set[str]) -> str:
    worn = [BY_NAME[x].phrase for x in _WORN if x in labels]
    return f"The person is wearing {_join(worn)}." if worn else "The person wears no accessories."


def _facial_hair_answer(labels: set[str]) -> str:
    hair = [BY_NAME[x].phrase for x in ("facial_hair", "goatee", "mustache", "stubbly") if x in labels]
    return f"The person has {_join(hair)}." if hair else "The person has no beard."


_ATTRIBUTE_ANSWERS = {"hair_colour": _hair_colour_answer, "hair": _hair_answer, "accessories": _accessories_answer,
                      "facial_hair": _facial_hair_answer}


@dataclass(frozen=True)
class _Ask:
    """One question before it is worded: its kind (``favchat.data.questions.KINDS``), the label(s) it names,
    and its answer."""

    kind: str
    answer: str
    label: str | None = None
    other: str | None = None


def make_qa(labels: dict[str, list[str]], free_events: list[Event], all_events: list[Event], n_frames: int,
            fps: float, summary: str, rng: np.random.Generator, wordings: tuple[str, ...] = ("seen",)) -> list[QA]:
    """Question–answer pairs of every type the clip supports (attribute, action, emotion, temporal, yes/no with
    one true positive and one true negative, open description), each asked once per wording in ``wordings``
    (``favchat.data.questions``: "seen" on train and val clips, "seen" and "unseen" on test clips)."""
    have = {n for g in GROUPS for n in labels[g]}
    kind = str(rng.choice(list(_ATTRIBUTE_ANSWERS)))
    asks = [_Ask(kind, _ATTRIBUTE_ANSWERS[kind](have))]
    # Action.
    acts = [BY_NAME[e.label].phrase for e in free_events]
    linked = [a for a in labels["action"] if a in ("smile", "frown")]
    if acts:
        ans = "The person " + ", then ".join(acts)
        ans += f", and {BY_NAME[linked[0]].phrase} while showing the emotion." if linked else "."
    elif linked:
        ans = f"Apart from the expression, the head stays still: the person {BY_NAME[linked[0]].phrase}."
    else:
        ans = "The person keeps the head mostly still and does no distinct action."
    asks.append(_Ask("actions", ans))
    # Emotion, with the visible cues.
    emo = labels["emotion"][0]
    asks.append(_Ask("emotion", f"The person looks {BY_NAME[emo].phrase}: {EMOTION_CUES[emo]}."))
    # Temporal.
    if len(free_events) >= 2:
        i, j = sorted(rng.choice(len(free_events), 2, replace=False))
        a, b = free_events[i].label, free_events[j].label
        first, second = (a, b) if rng.random() < 0.5 else (b, a)
        ans = f"{verb_forms(a)[1].capitalize()} comes first; {verb_forms(b)[1]} follows."
        asks.append(_Ask("order", ans, first, second))
    elif free_events:
        ev = free_events[0]
        asks.append(_Ask("when", _sentence(f"The person {BY_NAME[ev.label].phrase} {_when(ev, n_frames, fps)}"),
                         ev.label))
    elif any(e.label == emo for e in all_events) and emo != "neutral":
        ev = next(e for e in all_events if e.label == emo)
        when = "from the very start" if ev.start == 0 else f"after about {ev.start / fps:.1f} s"
        asks.append(_Ask("expression_change", f"The person looks {BY_NAME[emo].phrase} {when}."))
    # Yes/no: one true positive and one true negative, over rendered labels.
    askable = [n for g in GROUPS for n in RENDERED[g] if g != "appearance" or n in _YESNO_APPEARANCE]
    pos_pool = [n for n in askable if n in have]
    neg_pool = [n for n in askable if n not in have]
    if pos_pool:
        asks.append(_yes_no(str(rng.choice(pos_pool)), True))
    if neg_pool:
        asks.append(_yes_no(str(rng.choice(neg_pool)), False))
    asks.append(_Ask("description", summary))
    return [QA(ask(q.kind, w, rng, q.label, q.other), q.answer, KINDS[q.kind], w) for q in asks for w in wordings]


def _yes_no(label: str, present: bool) -> _Ask:
    lab = BY_NAME[label]
    if label == "bald":
        a = "Yes, the person is bald." if present else "No, the person is not bald."
    elif lab.group == "appearance":
        verb = "is wearing" if label in _WORN else "has"
        bare = re.sub(r"^(a|an) ", "", lab.phrase)
        a = f"Yes, the person {verb} {lab.phrase}." if present else f"No, the person has no {bare}."
    elif lab.group == "action":
        a = f"Yes, the person {lab.phrase}." if present else f"No, the person does not {verb_forms(label)[0]}."
    else:
        a = f"Yes, the person looks {lab.phrase}." if present else f"No, the person does not look {lab.phrase}."
    return _Ask("yesno", a, label)
