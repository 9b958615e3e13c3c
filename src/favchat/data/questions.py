"""Question wording: many phrasings of every question FaVChat's data writers ask, in a seen and an unseen set.

    from favchat.data.questions import ask
    ask("emotion", "seen", rng)                        # "What's her mood?", "How is the person feeling?", ...
    ask("yesno", "unseen", rng, label="eyeglasses")    # "Glasses on him, yes or no?", ...

Each question **kind** (``KINDS``: what is asked, e.g. the hair colour, the actions, a yes/no about one label)
has *frames* (sentence patterns) in two disjoint sets. **Seen** frames are the only ones training and
validation clips carry. **Unseen** frames are held out: other syntactic forms (choice questions, requests,
embedded and fronted questions, tags such as "..., yes or no?", past tense), never mere word swaps of a seen
frame, and they draw their label words from a larger pool (synonyms a seen wording never uses: "spectacles",
"startled"). A test clip carries each question twice, in a seen and an unseen wording (``QA.wording``), so a
report can give the accuracy on both side by side. Subjects (the person, he, she, they, ...) are shared by
both sets; a wording is seen only when its frame and its label words are.

FaceSynth (``favchat.data.synth.text``) and the dataset pipeline's offline template writer
(``favchat.data.pipeline.annotate``) both ask through :func:`ask`, with the clip's own seeded generator, so
a clip's questions are a pure function of its seed. What a question asks never changes its answer: answers
are written from the labels and scored by their content (``favchat.eval.qa_accuracy``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from favchat.data.manifest import WORDINGS
from favchat.data.taxonomy import BY_NAME

# What a person types besides the sentence itself: some start lower case, some drop the question mark.
_LOWER_P, _NO_MARK_P = 0.15, 0.1


@dataclass(frozen=True)
class Subject:
    """How a question refers to the person: ``nom`` he, ``poss`` his, ``obj`` him, ``own`` his (inside a
    clause whose subject is ``nom``: "Does the person close their eyes?"), ``plural`` for verb agreement."""

    nom: str
    poss: str
    obj: str
    own: str
    plural: bool = False


NEUTRAL_SUBJECTS: tuple[Subject, ...] = (
    Subject("the person", "the person's", "the person", "their"),
    Subject("this person", "this person's", "this person", "their"),
    Subject("the individual", "the individual's", "the individual", "their"),
    Subject("they", "their", "them", "their", plural=True),
)
HE = Subject("he", "his", "him", "his")
SHE = Subject("she", "her", "her", "her")
# FaceSynth's faces have no gender label: a person asking says he or she as it comes to them.
SUBJECTS: tuple[Subject, ...] = NEUTRAL_SUBJECTS + (HE, SHE)

# Frames: format strings over {s} {p} {o} {own} (the subject), {is} {does} {has} {looks} {seems} (verbs that
# agree with it), {x} (a label's words), {v} {vs} {ving} (an action: base, agreeing, -ing form) and {a} {b}
# (two actions, -ing form). The first letter is capitalised when the question is written.
FRAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "hair_colour": {
        "seen": ("What colour is {p} hair?", "What color is {p} hair?", "What colour is the hair?",
                 "What hair colour {does} {s} have?", "Which colour is {p} hair?", "What is {p} hair colour?",
                 "What's the colour of {p} hair?", "What color hair {does} {s} have?", "Tell me {p} hair colour.",
                 "Hair colour?"),
        "unseen": ("Is {p} hair black, brown, blond or gray?",
                   "If you had to name the colour of {p} hair, what would it be?",
                   "I'd like to know which shade {p} hair is.", "Could you tell me how {p} hair is coloured?",
                   "The hair on {p} head: which colour?", "Name the colour of the hair you see.",
                   "How would you describe the colour of {p} hair?"),
    },
    "hair": {
        "seen": ("Describe {p} hair.", "What does {p} hair look like?", "What is {p} hair like?",
                 "How {does} {s} wear {own} hair?", "Tell me about {p} hair.", "What kind of hair {does} {s} have?",
                 "Describe {p} hairstyle.", "What hairstyle {does} {s} have?", "How is {p} hair styled?",
                 "What is {p} hairstyle like?"),
        "unseen": ("Give me a description of {p} hair: colour, length and style.",
                   "How would you describe the hair on {p} head?", "I want to know everything about {p} hair.",
                   "Can you say what {p} hair looks like?", "{p} hair: what is it like?",
                   "If someone asked about {p} hair, what would you tell them?"),
    },
    "accessories": {
        "seen": ("What accessories {is} {s} wearing?", "What accessories {does} {s} wear?",
                 "Which accessories can you see on {o}?", "{does} {s} wear any accessories?",
                 "What accessories {does} {s} have on?", "List {p} accessories.",
                 "{is} {s} wearing any jewellery or glasses?", "What {is} {s} wearing?", "Any accessories?",
                 "What {is} {s} wearing on {own} head, face or neck?"),
        "unseen": ("Apart from clothes, what {has} {s} got on?",
                   "Tell me which items {s} {is} wearing, like glasses, hats or jewellery.",
                   "Could you list anything worn on {p} head, face, ears or neck?",
                   "I'm looking for accessories: which ones do you see on {o}?",
                   "Name every accessory visible on {o}.",
                   "Which of these {does} {s} wear: glasses, a hat, earrings, a necklace?"),
    },
    "facial_hair": {
        "seen": ("Describe {p} facial hair.", "{does} {s} have a beard?", "What facial hair {does} {s} have?",
                 "Is there any facial hair on {p} face?", "What kind of beard {does} {s} have?",
                 "Tell me about {p} facial hair.", "{does} {s} have any facial hair?", "Beard?",
                 "What about {p} beard?", "{does} {s} have a mustache or a beard?"),
        "unseen": ("{is} {s} clean-shaven, or is there a beard or a mustache?",
                   "How would you describe the hair on {p} chin and upper lip?",
                   "I'd like to know whether {s} {has} a beard, a mustache or stubble.",
                   "Any beard, goatee or mustache on {o}?",
                   "What can you say about {p} beard, if there is one?",
                   "Could you tell me what facial hair you can see?"),
    },
    "appearance": {
        "seen": ("What {does} {s} look like?", "Describe {p} appearance.", "How {does} {s} look?",
                 "Describe {p} face.", "What does the person in the video look like?", "Tell me about {p} looks.",
                 "What is {p} appearance?", "What does the face look like?", "Describe the person."),
        "unseen": ("Can you paint a picture of {o} in words?", "I'd like a description of how {s} {looks}.",
                   "Give me the details of {p} appearance: hair, face and what {s} {is} wearing.",
                   "How would you describe {o} to someone who cannot see the video?",
                   "Sum up {p} appearance in a sentence."),
    },
    "actions": {
        "seen": ("What {does} {s} do in the video?", "What actions {does} {s} perform?", "What {is} {s} doing?",
                 "What {does} {s} do?", "Which actions can you see?", "What movements {does} {s} make?",
                 "What happens in the video?", "Describe {p} actions.",
                 "What {does} {s} do with {own} face and head?", "What is happening in the clip?",
                 "Describe the movements.", "Any actions?"),
        "unseen": ("Walk me through everything {s} {does} in the clip.",
                   "From start to end, which movements do you notice?",
                   "Could you list the actions in this video in order?",
                   "Tell me what {s} {is} up to in this clip.",
                   "If you had to narrate {p} movements, what would you say?",
                   "Which gestures or facial movements does the video show?"),
    },
    "emotion": {
        "seen": ("What emotion {does} {s} show?", "How {does} {s} feel?", "What's {p} mood?",
                 "How {is} {s} feeling?", "Which emotion is on {p} face?", "What emotion does the face express?",
                 "What is {p} emotional state?", "What mood {is} {s} in?", "What emotion do you see?", "Mood?",
                 "What {is} {s} feeling?", "What feeling does {p} face show?"),
        "unseen": ("Would you say {s} {is} happy, sad, angry, surprised, scared, disgusted or calm?",
                   "Tell me how {s} {seems} to feel.", "If you read {p} expression, what feeling does it show?",
                   "I'd like to know {p} emotional state.", "Name the feeling {p} face gives away.",
                   "Judging by {p} face, what {is} {s} feeling?",
                   "Can you describe the emotion behind {p} expression?"),
    },
    "description": {
        "seen": ("Describe the video.", "Describe the person in the video.", "Give a detailed description of the video.",
                 "What can you tell about {p} appearance, actions and emotion?", "Summarise the video.",
                 "Describe what you see.", "What is going on in this video?", "Describe the clip in detail.",
                 "Tell me about the video.", "Describe the clip.", "What do you see in the video?"),
        "unseen": ("Could you give me a full rundown of this clip?",
                   "Write a short paragraph about the person and what happens.",
                   "Imagine I cannot see the video: describe it to me.",
                   "I'd like a summary covering looks, movements and mood.",
                   "Explain in a few sentences what the clip shows.",
                   "Walk me through this video from beginning to end."),
    },
    "order": {
        "seen": ("Which happens first: {a} or {b}?", "What comes first, {a} or {b}?",
                 "Which {does} {s} do first, {a} or {b}?", "In what order do {a} and {b} happen?",
                 "Does {a} come before or after {b}?", "Which comes earlier in the clip: {a} or {b}?",
                 "Which is first, {a} or {b}?"),
        "unseen": ("Between {a} and {b}, which one starts sooner?", "Put {a} and {b} in the order they happen.",
                   "{a} and {b}: which one did {s} do first?",
                   "Tell me whether {a} happens before {b} or the other way round.",
                   "If you list {a} and {b} by time, which goes first?"),
    },
    "when": {
        "seen": ("When {does} {s} {v}?", "At what point {does} {s} {v}?", "When in the clip {does} {s} {v}?",
                 "At what time {is} {s} {ving}?", "When do you see {o} {v}?", "At what moment {does} {s} {v}?",
                 "When {is} {s} {ving}?"),
        "unseen": ("How far into the video {does} {s} {v}?", "Tell me the moment {s} {vs}.",
                   "At which part of the clip, beginning, middle or end, {does} {s} {v}?",
                   "{ving}: when does that happen?", "I'd like to know at what time {s} {vs}."),
    },
    "expression_change": {
        "seen": ("When does {p} expression change?", "When does the emotion set in?",
                 "At what point does {p} expression change?", "When {does} {s} start to show an emotion?",
                 "When does the face change?", "When {does} {s} change expression?"),
        "unseen": ("How long into the clip before {p} face changes?", "Tell me the moment {p} expression shifts.",
                   "From what time on is the emotion visible?", "Does {p} mood change, and if so when?"),
    },
    # Yes/no questions about one label; the frames depend on how the label is spoken of (YESNO_FORMS).
    "yesno_wear": {
        "seen": ("{is} {s} wearing {x}?", "{does} {s} wear {x}?", "{does} {s} have {x} on?",
                 "Can you see {x} on {o}?", "Do you see {x} on {o}?", "{is} {s} wearing {x} in the video?",
                 "{is} {s} wearing {x} at all?", "Do you see {x}?"),
        "unseen": ("Would you say {s} {is} wearing {x}?", "Tell me whether {s} {has} {x} on.",
                   "{x} on {o}, yes or no?", "Is it true that {s} {is} wearing {x}?", "{has} {s} put on {x}?",
                   "Any chance {s} {is} wearing {x}?"),
    },
    "yesno_have": {
        "seen": ("{does} {s} have {x}?", "{has} {s} got {x}?", "Can you see {x} on {o}?",
                 "{does} {s} have {x} in the video?", "Do you notice {x}?", "{does} {s} have {x} or not?",
                 "Can you see {x}?"),
        "unseen": ("Would you say {s} {has} {x}?", "Tell me whether {s} {has} {x}.", "{x}, yes or no?",
                   "Is it true that {s} {has} {x}?", "Is there any sign of {x}?"),
    },
    "yesno_be": {
        "seen": ("{is} {s} {x}?", "{is} {s} {x} in the video?", "{is} {s} {x} or not?",
                 "Is the person in the video {x}?", "{does} {s} look {x}?"),
        "unseen": ("Tell me whether {s} {is} {x}.", "Is it true that {s} {is} {x}?", "{x}, yes or no?",
                   "Would you describe {o} as {x}?", "Would you call {o} {x}?"),
    },
    "yesno_action": {
        "seen": ("{does} {s} {v} in the video?", "{does} {s} {v} at some point?", "{is} {s} {ving} at any point?",
                 "Do you see {o} {v}?", "{does} {s} ever {v}?", "{does} {s} {v}?", "{is} {s} {ving}?",
                 "{does} {s} {v} or not?"),
        "unseen": ("Did {s} {v}?", "Tell me whether {s} {vs} during the clip.", "Can you spot {o} {ving}?",
                   "Is it true that {s} {vs} in this video?", "{ving}: does that happen in the video?",
                   "I wonder if {s} {vs} at all. {Does} {s}?"),
    },
    "yesno_emotion": {
        "seen": ("{does} {s} look {x}?", "{is} {s} {x}?", "{does} {s} seem {x}?", "{is} {s} feeling {x}?",
                 "{does} {s} look {x} in the video?", "{does} {s} look {x} or not?", "{does} {s} appear {x}?"),
        "unseen": ("Would you describe {o} as {x}?", "Tell me whether {s} {looks} {x}.",
                   "Is it true that {s} {is} feeling {x}?", "{x}, yes or no?", "Any sign that {s} {is} {x}?",
                   "Did {s} seem {x} to you?"),
    },
}

# The question kinds a caller asks for, with the QA type of their answers.
KINDS: dict[str, str] = {
    "hair_colour": "attribute", "hair": "attribute", "accessories": "attribute", "facial_hair": "attribute",
    "appearance": "attribute", "actions": "action", "emotion": "emotion", "description": "description",
    "order": "temporal", "when": "temporal", "expression_change": "temporal", "yesno": "yesno",
}

# How a yes/no question speaks of an appearance label: (frames, seen words, unseen words). Labels not listed
# are "have" with their taxonomy phrase ("Does the person have a pointy nose?").
_APPEARANCE_WORDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "blurry": ("be", ("blurry",), ("out of focus",)),
    "male": ("be", ("male",), ("a man",)),
    "young": ("be", ("young",), ("youthful",)),
    "chubby": ("be", ("chubby",), ("plump",)),
    "bald": ("be", ("bald",), ("completely bald",)),
    "no_beard": ("be", ("beardless",), ("beard-free",)),
    "clean_shaven": ("be", ("clean-shaven",), ("freshly shaven",)),
    "pale_skin": ("have", ("pale skin",), ("a pale complexion", "fair skin")),
    "rosy_cheeks": ("have", ("rosy cheeks",), ("pink cheeks", "flushed cheeks")),
    "bangs": ("have", ("bangs",), ("a fringe",)),
    "black_hair": ("have", ("black hair",), ("dark hair",)),
    "blond_hair": ("have", ("blond hair", "blonde hair"), ("golden hair",)),
    "gray_hair": ("have", ("gray hair", "grey hair"), ("silver hair",)),
    "brown_hair": ("have", ("brown hair",), ("chestnut hair",)),
    "wavy_hair": ("have", ("wavy hair",), ("curly hair",)),
    "long_hair": ("have", ("long hair",), ("shoulder-length hair",)),
    "bushy_eyebrows": ("have", ("bushy eyebrows",), ("thick eyebrows",)),
    "eyeglasses": ("wear", ("glasses", "eyeglasses"), ("spectacles",)),
    "sunglasses": ("wear", ("sunglasses",), ("shades", "dark glasses")),
    "mustache": ("have", ("a mustache", "a moustache"), ("hair on the upper lip",)),
    "goatee": ("have", ("a goatee",), ("a goatee beard",)),
    "facial_hair": ("have", ("a full beard", "a beard"), ("a beard covering the jaw",)),
    "stubbly": ("have", ("stubble",), ("a stubbly chin",)),
    "heavy_makeup": ("wear", ("heavy makeup",), ("a lot of makeup",)),
    "wearing_earrings": ("wear", ("earrings",), ("ear studs",)),
    "wearing_hat": ("wear", ("a hat", "a cap"), ("headwear", "a cap or a hat")),
    "wearing_lipstick": ("wear", ("lipstick",), ("lip colour",)),
    "wearing_necklace": ("wear", ("a necklace",), ("a pendant", "a neck chain")),
    "wearing_necktie": ("wear", ("a tie", "a necktie"), ()),
    "wearing_mask": ("wear", ("a mask", "a face mask"), ()),
}

# Actions as verbs (base forms; {own}: the subject's own, "close their eyes"; the first is the form answers
# use). Only the actions FaceSynth renders are asked about by action; the other taxonomy actions have no entry.
_ACTION_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "close_eyes": (("close the eyes", "close {own} eyes", "blink"), ("shut {own} eyes",)),
    "frown": (("frown",), ("knit {own} brows", "furrow {own} brow")),
    "laugh": (("laugh",), ("burst out laughing",)),
    "look_around": (("look around",), ("glance around", "look from side to side")),
    "nod": (("nod", "nod {own} head"), ("move {own} head up and down",)),
    "shake_head": (("shake the head", "shake {own} head"), ("move {own} head from side to side",)),
    "smile": (("smile",), ("break into a smile",)),
    "talk": (("talk", "speak"), ("say something",)),
    "turn": (("turn the head", "turn {own} head"), ("turn to one side",)),
    "wink": (("wink",), ("close one eye",)),
    "yawn": (("yawn",), ("give a yawn",)),
    "squint": (("squint",), ("narrow {own} eyes",)),
    "pout": (("pout",), ("purse {own} lips",)),
}

_EMOTION_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "happy": (("happy", "cheerful"), ("glad", "joyful")),
    "sad": (("sad", "unhappy"), ("gloomy", "downcast")),
    "surprise": (("surprised", "astonished"), ("amazed", "startled")),
    "neutral": (("neutral", "calm"), ("expressionless", "composed")),
    "anger": (("angry", "annoyed"), ("furious", "irritated")),
    "contempt": (("contemptuous",), ("scornful",)),
    "disgust": (("disgusted", "grossed out"), ("revolted", "repulsed")),
    "fear": (("afraid", "scared"), ("frightened", "fearful")),
    "shame": (("ashamed", "embarrassed"), ("sheepish",)),
    "confusion": (("confused", "puzzled"), ("bewildered",)),
}

_DOUBLED = {"nod", "shut", "knit"}  # verbs that double their last consonant: nodding


def _third(verb: str) -> str:
    if verb.endswith(("sh", "ch", "s", "x")):
        return verb + "es"
    return verb + "s"


def _ing(verb: str) -> str:
    if verb in _DOUBLED:
        return verb + verb[-1] + "ing"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    return verb + "ing"


def _inflect(phrase: str, form) -> str:
    head, _, rest = phrase.partition(" ")
    return f"{form(head)} {rest}".strip()


def verb_forms(action: str) -> tuple[str, str]:
    """An action's base and -ing forms as answers write them: ("close the eyes", "closing the eyes")."""
    base = _ACTION_WORDS[action][0][0]
    return base, _inflect(base, _ing)


def label_words(label: str, wording: str) -> tuple[str, tuple[str, ...]]:
    """(yes/no frame set, the words a ``wording`` question may use for ``label``): seen words for seen
    questions, seen and unseen words for unseen ones."""
    lab = BY_NAME[label]
    if lab.group == "appearance":
        forms, seen, unseen = _APPEARANCE_WORDS.get(label, ("have", (lab.phrase,), ()))
        frames = f"yesno_{forms}"
    elif lab.group == "action":
        if label not in _ACTION_WORDS:
            raise ValueError(f"no wording for the action {label!r} (worded: {sorted(_ACTION_WORDS)})")
        seen, unseen = _ACTION_WORDS[label]
        frames = "yesno_action"
    else:
        seen, unseen = _EMOTION_WORDS[label]
        frames = "yesno_emotion"
    return frames, seen if wording == "seen" else seen + unseen


def _check(kind: str, wording: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown question kind {kind!r} (kinds: {sorted(KINDS)})")
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {WORDINGS}, got {wording!r}")


def _frame_set(kind: str, label: str | None) -> str:
    if kind != "yesno":
        return kind
    if label is None:
        raise ValueError("a yes/no question needs the label it asks about")
    return label_words(label, "seen")[0]


def _fill(frame: str, subject: Subject, words: dict[str, str]) -> str:
    pl = subject.plural
    verbs = {"is": "are" if pl else "is", "does": "do" if pl else "does", "has": "have" if pl else "has",
             "looks": "look" if pl else "looks", "seems": "seem" if pl else "seems"}
    verbs |= {k.capitalize(): v.capitalize() for k, v in verbs.items()}  # inside a frame, after a full stop
    own = {"own": subject.own}
    slots = {k: v.format(**own) for k, v in words.items()}
    if "v" in slots:
        slots |= {"vs": slots["v"] if pl else _inflect(slots["v"], _third), "ving": _inflect(slots["v"], _ing)}
    text = frame.format(s=subject.nom, p=subject.poss, o=subject.obj, own=subject.own, **verbs, **slots)
    return text[0].upper() + text[1:]


def _options(kind: str, wording: str, label: str | None,
             other: str | None) -> tuple[tuple[str, ...], list[dict[str, str]]]:
    """The frames and the word fillings a question of ``kind`` in ``wording`` draws from."""
    _check(kind, wording)
    frames = FRAMES[_frame_set(kind, label)][wording]
    if kind == "yesno":
        _, words = label_words(label, wording)  # type: ignore[arg-type]
        key = "v" if BY_NAME[label].group == "action" else "x"  # type: ignore[index]
        return frames, [{key: w} for w in words]
    if kind == "when":
        return frames, [{"v": w} for w in label_words(label, wording)[1]]  # type: ignore[arg-type]
    if kind == "order":
        a, b = (label_words(x, wording)[1] for x in (label, other))  # type: ignore[arg-type]
        return frames, [{"_a": wa, "_b": wb} for wa in a for wb in b]
    return frames, [{}]


def _render(frame: str, subject: Subject, fill: dict[str, str]) -> str:
    if "_a" in fill:  # order: two actions in -ing form, each with the subject's own
        a, b = (_inflect(fill[k].format(own=subject.own), _ing) for k in ("_a", "_b"))
        fill = {"a": a, "b": b}
    return _fill(frame, subject, fill)


def ask(kind: str, wording: str, rng: np.random.Generator, label: str | None = None, other: str | None = None,
        subjects: Sequence[Subject] = SUBJECTS) -> str:
    """One question of ``kind`` in a ``wording`` ("seen" | "unseen") frame, drawn with ``rng``. ``label``: the
    label a yes/no question asks about, or the action of ``when``/``order``; ``other``: ``order``'s second
    action; ``subjects``: the ways the question may refer to the person."""
    frames, fills = _options(kind, wording, label, other)
    frame = frames[int(rng.integers(len(frames)))]
    subject = subjects[int(rng.integers(len(subjects)))]
    text = _render(frame, subject, fills[int(rng.integers(len(fills)))])
    if rng.random() < _LOWER_P:
        text = text[0].lower() + text[1:]
    if text.endswith("?") and rng.random() < _NO_MARK_P:
        text = text[:-1]
    return text


def all_wordings(kind: str, wording: str, label: str | None = None, other: str | None = None,
                 subjects: Sequence[Subject] = SUBJECTS) -> set[str]:
    """Every question ``ask`` can write for these arguments, in canonical form (``canonical``)."""
    frames, fills = _options(kind, wording, label, other)
    return {canonical(_render(f, s, w)) for f, s, w in itertools.product(frames, subjects, fills)}


def canonical(question: str) -> str:
    """A question without what ``ask`` varies on the surface (case, the question mark)."""
    return question.strip().rstrip("?").lower()
