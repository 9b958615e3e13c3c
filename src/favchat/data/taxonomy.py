"""The 103-label facial taxonomy of the paper (App. B, Table 5), its lexicon and its textual mapping.

Everything that speaks about facial labels goes through this module: FaceSynth's ground truth, the
dataset pipeline's extractors, the fine-grained reward of DE-GRPO and the evaluation.

- ``LABELS``: the 103 labels in the paper's order, grouped 48 appearance / 45 action / 10 emotion,
  with the paper's per-label counts in FaVChat-170K.
- ``EXCLUSIVE_SETS``: sets of labels of which a face shows at most one at a time (hair colours,
  emotions, beard states, ...). ``contradicts(a, b)`` reads them.
- ``find_mentions(text)``: a negation-aware lexicon matcher ("no glasses" is a negated mention).
- ``scores_to_features`` / ``features_to_text`` / ``text_to_features``: the rule-based textual mapping
  of App. B.3 from extractor scores to a feature dictionary and to phrases, and back.

Extractor sources. The paper states the three extractors' sizes (E1: 83, E2: 42, E3: 12; 34 duplicates
removed) but not their label lists. E1 is CelebV-HQ's 83 attributes, which are exactly the first 40
appearance, 35 action and 8 emotion labels of Table 5. E2 and E3 below are this project's assignment,
chosen so that the counts and the union match the paper: E2 covers the 8 remaining appearance labels,
shame and confusion, and 32 labels shared with E1; E3 covers the 10 remaining (micro-expression)
actions plus frown and sneer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache

GROUPS: tuple[str, ...] = ("appearance", "action", "emotion")


@dataclass(frozen=True)
class Label:
    name: str  # canonical id, snake_case
    group: str  # one of GROUPS
    phrase: str  # the phrase the textual mapping writes
    synonyms: tuple[str, ...] = field(default=())  # lexicon entries that mention this label
    paper_count: int = 0  # clips with this label in FaVChat-170K (Table 5)


def _verb(*bases: str) -> tuple[str, ...]:
    """Inflections of regular English verbs: smile -> smile, smiles, smiling, smiled."""
    out: list[str] = []
    for b in bases:
        words = b.split(" ")
        head, rest = words[0], " ".join(words[1:])
        if head.endswith("e") and not head.endswith("ee"):
            forms = [head, head + "s", head[:-1] + "ing", head + "d"]
        elif head.endswith(("sh", "ch", "s", "x")):
            forms = [head, head + "es", head + "ing", head + "ed"]
        elif head.endswith("y") and head[-2] not in "aeiou":
            forms = [head, head[:-1] + "ies", head + "ing", head[:-1] + "ied"]
        else:
            forms = [head, head + "s", head + "ing", head + "ed"]
        out.extend(f"{f} {rest}".strip() for f in forms)
    return tuple(out)


# (name, phrase, synonyms, paper count). Phrases are what the textual mapping writes; synonyms are
# what the lexicon recognises (the phrase is always recognised too).
_APPEARANCE: list[tuple[str, str, tuple[str, ...], int]] = [
    ("blurry", "a blurry image", ("blurry", "blurred", "out of focus"), 610),
    ("male", "a man", ("man", "male", "boy", "gentleman", "guy"), 38434),
    ("young", "a young person", ("young", "youthful", "teenage", "teenager"), 15252),
    ("chubby", "a chubby face", ("chubby", "plump", "round-faced"), 4880),
    ("pale_skin", "pale skin", ("pale skin", "pale", "fair skin", "pale-skinned", "pale complexion"), 2440),
    ("rosy_cheeks", "rosy cheeks", ("rosy cheeks", "rosy", "flushed cheeks", "pink cheeks", "red cheeks"), 11591),
    ("oval_face", "an oval face", ("oval face", "oval-shaped face", "oval"), 3660),
    ("receding_hairline", "a receding hairline", ("receding hairline", "receding hair"), 7321),
    ("bald", "a bald head", ("bald", "hairless head", "no hair"), 1830),
    ("bangs", "bangs", ("bangs", "fringe"), 6711),
    ("black_hair", "black hair", ("black hair", "dark hair", "jet-black hair", "black-haired"), 16472),
    ("blond_hair", "blond hair", ("blond hair", "blonde hair", "blond", "blonde", "golden hair", "fair hair"), 9761),
    ("gray_hair", "gray hair", ("gray hair", "grey hair", "white hair", "silver hair", "gray-haired", "grey-haired"), 7626),
    ("brown_hair", "brown hair", ("brown hair", "brunette", "chestnut hair", "brown-haired"), 20742),
    ("straight_hair", "straight hair", ("straight hair",), 9151),
    ("wavy_hair", "wavy hair", ("wavy hair", "curly hair", "wavy", "curly"), 12201),
    ("long_hair", "long hair", ("long hair", "long-haired", "shoulder-length hair"), 13422),
    ("arched_eyebrows", "arched eyebrows", ("arched eyebrows", "arched brows"), 20742),
    ("bushy_eyebrows", "bushy eyebrows", ("bushy eyebrows", "thick eyebrows", "bushy brows", "thick brows"), 10371),
    ("bags_under_eyes", "bags under the eyes", ("bags under the eyes", "bags under his eyes", "bags under her eyes", "bags under eyes", "under-eye bags", "puffy eyes"), 5491),
    ("eyeglasses", "eyeglasses", ("eyeglasses", "glasses", "spectacles"), 6467),
    ("sunglasses", "sunglasses", ("sunglasses", "shades", "dark glasses"), 1834),
    ("narrow_eyes", "narrow eyes", ("narrow eyes", "small eyes"), 1220),
    ("big_nose", "a big nose", ("big nose", "large nose", "prominent nose"), 14621),
    ("pointy_nose", "a pointy nose", ("pointy nose", "pointed nose", "sharp nose"), 28674),
    ("high_cheekbones", "high cheekbones", ("high cheekbones", "prominent cheekbones"), 3672),
    ("big_lips", "big lips", ("big lips", "full lips", "thick lips"), 2928),
    ("double_chin", "a double chin", ("double chin",), 2671),
    ("no_beard", "no beard", ("no beard", "beardless", "without a beard"), 35994),
    ("5_o_clock_shadow", "a five o'clock shadow", ("five o'clock shadow", "5 o'clock shadow", "five o clock shadow"), 7981),
    ("goatee", "a goatee", ("goatee",), 976),
    ("sideburns", "sideburns", ("sideburns",), 10981),
    ("mustache", "a mustache", ("mustache", "moustache"), 2478),
    ("heavy_makeup", "heavy makeup", ("heavy makeup", "heavy make-up", "lots of makeup"), 8541),
    ("wearing_earrings", "earrings", ("earrings", "earring", "ear studs"), 8976),
    ("wearing_hat", "a hat", ("hat", "cap", "beanie", "headwear"), 4271),
    ("wearing_lipstick", "lipstick", ("lipstick", "red lips", "painted lips"), 8663),
    ("wearing_necklace", "a necklace", ("necklace", "pendant", "chain around the neck"), 3663),
    ("wearing_necktie", "a necktie", ("necktie", "tie"), 3512),
    ("wearing_mask", "a mask", ("mask", "face mask", "face covering"), 1021),
    ("facial_tattoos", "facial tattoos", ("facial tattoos", "facial tattoo", "face tattoo", "tattoo on the face"), 244),
    ("facial_hair", "facial hair", ("facial hair", "beard", "bearded", "full beard"), 126),
    ("clean_shaven", "a clean-shaven face", ("clean-shaven", "clean shaven", "shaven"), 421),
    ("stubbly", "stubble", ("stubble", "stubbly", "unshaven"), 17784),
    ("shaved_head", "a shaved head", ("shaved head", "shaven head", "buzzed head"), 276),
    ("crew_cut", "a crew cut", ("crew cut", "buzz cut", "short cropped hair"), 7123),
    ("mullet", "a mullet", ("mullet",), 62),
    ("bald_spot", "a bald spot", ("bald spot", "thinning crown"), 42),
]

_ACTION: list[tuple[str, str, tuple[str, ...], int]] = [
    ("blow", "blows", _verb("blow") + ("blown", "blew", "blowing air", "puffs air"), 1961),
    ("chew", "chews", _verb("chew"), 1891),
    ("close_eyes", "closes the eyes", _verb("close the eyes", "close his eyes", "close her eyes", "close their eyes", "blink")
     + ("eyes closed", "closed eyes", "shut eyes", "eyes shut", "blinks", "blinking"), 2441),
    ("cough", "coughs", _verb("cough"), 51),
    ("cry", "cries", _verb("cry") + ("tears",), 692),
    ("drink", "drinks", _verb("drink") + ("drank", "sipping", "sips"), 1161),
    ("eat", "eats", _verb("eat") + ("ate", "eaten"), 1432),
    ("frown", "frowns", _verb("frown") + ("furrowed brow", "furrowed brows", "knitted brows"), 9761),
    ("gaze", "gazes", _verb("gaze"), 9151),
    ("glare", "glares", _verb("glare"), 3678),
    ("head_wagging", "wags the head", _verb("wag the head", "wag his head", "wag her head", "wag their head", "bob the head")
     + ("head wagging", "wagging head", "head bobbing", "head tilting"), 13421),
    ("kiss", "kisses", _verb("kiss"), 918),
    ("laugh", "laughs", _verb("laugh") + ("laughter",), 2189),
    ("listen_to_music", "listens to music", _verb("listen to music") + ("headphones",), 1513),
    ("look_around", "looks around", _verb("look around", "glance around") + ("looking about",), 7688),
    ("make_a_face", "makes a face", ("make a face", "makes a face", "making a face", "made a face", "pulls a face", "funny face"), 107),
    ("nod", "nods", ("nod", "nods", "nodding", "nodded", "nods the head", "nodding head"), 8907),
    ("play_instrument", "plays an instrument", _verb("play an instrument", "play the guitar", "play the piano"), 102),
    ("read", "reads", ("reads", "reading"), 811),
    ("shake_head", "shakes the head", ("shakes the head", "shakes his head", "shakes her head", "shakes their head",
     "shaking the head", "shaking his head", "shaking her head", "shaking their head", "shook the head",
     "shook his head", "shook her head", "head shake", "head shaking", "shake the head", "shake his head",
     "shake her head"), 7931),
    ("shout", "shouts", _verb("shout", "yell", "scream"), 2032),
    ("sign", "signs", ("uses sign language", "sign language", "signing"), 1712),
    ("sing", "sings", ("sing", "sings", "singing", "sang", "sung"), 2001),
    ("sleep", "sleeps", ("sleep", "sleeps", "sleeping", "slept", "asleep"), 599),
    ("smile", "smiles", _verb("smile"), 15241),
    ("smoke", "smokes", _verb("smoke") + ("cigarette",), 1271),
    ("sneeze", "sneezes", _verb("sneeze"), 22),
    ("sneer", "sneers", _verb("sneer"), 1621),
    ("sniff", "sniffs", _verb("sniff"), 2318),
    ("talk", "talks", _verb("talk", "speak") + ("speaks", "speaking", "spoke", "chatting", "conversation"), 46775),
    ("turn", "turns the head", ("turns the head", "turns his head", "turns her head", "turns their head",
     "turning the head", "turning his head", "turning her head", "turned the head", "turns", "turning",
     "head turn", "turns away", "turns to the side"), 10981),
    ("weep", "weeps", ("weep", "weeps", "weeping", "wept", "sobbing", "sobs"), 2271),
    ("whisper", "whispers", _verb("whisper"), 2121),
    ("wink", "winks", ("wink", "winks", "winking", "winked"), 2098),
    ("yawn", "yawns", _verb("yawn"), 92),
    ("blush", "blushes", _verb("blush"), 6421),
    ("grin", "grins", ("grin", "grins", "grinning", "grinned"), 8724),
    ("grimace", "grimaces", _verb("grimace"), 102),
    ("scrunch", "scrunches the face", _verb("scrunch") + ("scrunched face", "scrunched nose"), 812),
    ("squint", "squints", _verb("squint"), 92),
    ("stare", "stares", _verb("stare"), 651),
    ("smirk", "smirks", _verb("smirk"), 61),
    ("sigh", "sighs", _verb("sigh"), 118),
    ("pout", "pouts", _verb("pout"), 141),
    ("wince", "winces", _verb("wince"), 271),
]

_EMOTION: list[tuple[str, str, tuple[str, ...], int]] = [
    ("happy", "happy", ("happy", "happiness", "joyful", "joy", "cheerful", "glad", "delighted", "pleased"), 10798),
    ("sad", "sad", ("sad", "sadness", "unhappy", "sorrowful", "gloomy", "melancholy", "downcast"), 4472),
    ("surprise", "surprised", ("surprise", "surprised", "astonished", "amazed", "startled", "shocked"), 726),
    ("neutral", "neutral", ("neutral", "expressionless", "calm", "composed", "impassive"), 39869),
    ("anger", "angry", ("anger", "angry", "furious", "irritated", "annoyed", "enraged", "mad"), 3629),
    ("contempt", "contemptuous", ("contempt", "contemptuous", "disdain", "disdainful", "scornful"), 469),
    ("disgust", "disgusted", ("disgust", "disgusted", "revolted", "repulsed", "grossed out"), 1403),
    ("fear", "fearful", ("fear", "fearful", "afraid", "scared", "frightened", "terrified", "anxious"), 836),
    ("shame", "ashamed", ("shame", "ashamed", "embarrassed", "embarrassment", "sheepish"), 31),
    ("confusion", "confused", ("confusion", "confused", "puzzled", "perplexed", "bewildered"), 36),
]


def _build(group: str, rows: list[tuple[str, str, tuple[str, ...], int]]) -> list[Label]:
    return [Label(n, group, p, tuple(dict.fromkeys((p,) + s)), c) for n, p, s, c in rows]


LABELS: tuple[Label, ...] = tuple(
    _build("appearance", _APPEARANCE) + _build("action", _ACTION) + _build("emotion", _EMOTION)
)
BY_NAME: dict[str, Label] = {lab.name: lab for lab in LABELS}
LABEL_NAMES: tuple[str, ...] = tuple(BY_NAME)
LABELS_BY_GROUP: dict[str, tuple[str, ...]] = {
    g: tuple(lab.name for lab in LABELS if lab.group == g) for g in GROUPS
}
PAPER_GROUP_COUNTS = {"appearance": 48, "action": 45, "emotion": 10}

# Sets of which a face shows at most one at a time. Emotions form one set: a clip in FaceSynth shows
# one emotion, and the reward counts "another emotion" as a contradiction.
EXCLUSIVE_SETS: tuple[frozenset[str], ...] = (
    frozenset({"black_hair", "blond_hair", "gray_hair", "brown_hair"}),
    frozenset({"straight_hair", "wavy_hair"}),
    frozenset({"eyeglasses", "sunglasses"}),
    frozenset({"no_beard", "5_o_clock_shadow", "stubbly", "goatee"}),
    frozenset({"no_beard", "facial_hair"}),
    frozenset({"no_beard", "mustache"}),
    frozenset({"clean_shaven", "stubbly"}),
    frozenset({"clean_shaven", "5_o_clock_shadow"}),
    frozenset({"clean_shaven", "facial_hair"}),
    frozenset({"clean_shaven", "goatee"}),
    frozenset({"clean_shaven", "mustache"}),
    frozenset({"bald", "long_hair"}),
    frozenset({"bald", "bangs"}),
    frozenset({"bald", "wavy_hair"}),
    frozenset({"bald", "straight_hair"}),
    frozenset({"shaved_head", "long_hair"}),
    frozenset({"shaved_head", "bangs"}),
    frozenset({"smile", "frown"}),
    frozenset(LABELS_BY_GROUP["emotion"]),
)

# The three extractors of App. B.2 (see the module docstring for how E2 and E3 were assigned).
EXTRACTORS: dict[str, tuple[str, ...]] = {
    "E1": LABELS_BY_GROUP["appearance"][:40] + LABELS_BY_GROUP["action"][:35]
    + ("neutral", "happy", "sad", "anger", "fear", "surprise", "disgust", "contempt"),
    "E2": LABELS_BY_GROUP["appearance"][40:]
    + ("shame", "confusion", "happy", "sad", "surprise", "neutral", "anger", "disgust", "fear")
    + ("smile", "laugh", "chew", "talk", "eat", "drink", "smoke", "kiss", "shout", "look_around", "close_eyes")
    + ("male", "young", "eyeglasses", "sunglasses", "bald", "black_hair", "blond_hair", "brown_hair",
       "gray_hair", "mustache", "goatee", "no_beard", "wearing_hat", "long_hair"),
    "E3": LABELS_BY_GROUP["action"][35:] + ("frown", "sneer"),
}


def group_of(name: str) -> str:
    return BY_NAME[name].group


def validate_labels(names: Iterable[str]) -> list[str]:
    """Return the names that are not taxonomy labels (empty when all are valid)."""
    return [n for n in names if n not in BY_NAME]


@cache
def _exclusive_partners(name: str) -> frozenset[str]:
    return frozenset().union(*(s for s in EXCLUSIVE_SETS if name in s)) - {name}


def contradicts(a: str, b: str) -> bool:
    """True when labels ``a`` and ``b`` cannot both hold for one face at one time."""
    return b in _exclusive_partners(a)


# ---------------------------------------------------------------------------------------------
# Lexicon matching


_NEGATORS = ("no", "not", "without", "never", "neither", "nor", "none", "lacks", "lacking", "free of",
             "n't", "nothing", "absence of", "absent", "instead of", "rather than")
_CLAUSE_BREAK = re.compile(r"[.;:!?\n]|,|\bbut\b|\bwhile\b|\band\b|\bwhereas\b|\bhowever\b")
_NEGATION_WINDOW = 4  # words before a mention in which a negator negates it


def _normalise(text: str) -> str:
    text = text.lower().replace("’", "'").replace("`", "'")
    text = re.sub(r"(\w)n't\b", r"\1 n't", text)  # doesn't -> does n't
    text = text.replace("_", " ")
    return re.sub(r"[ \t]+", " ", text)


@lru_cache(maxsize=1)
def _lexicon_regex() -> tuple[re.Pattern[str], dict[str, str]]:
    entry_to_label: dict[str, str] = {}
    for lab in LABELS:
        for s in lab.synonyms:
            entry_to_label.setdefault(_normalise(s), lab.name)
    # Longest entries first so that "sunglasses" wins over "glasses" and "no beard" over "beard".
    entries = sorted(entry_to_label, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(e) for e in entries) + r")(?![\w-])")
    return pattern, entry_to_label


@dataclass(frozen=True)
class Mention:
    label: str
    negated: bool
    start: int
    end: int
    text: str


def find_mentions(text: str) -> list[Mention]:
    """Every lexicon mention of a taxonomy label in ``text``, in order, with its negation flag.

    A mention is negated when a negator ("no", "not", "without", "n't", ...) stands within a few
    words before it in the same clause. Clauses break at punctuation and at "and"/"but"/"while",
    so "no glasses but a hat" negates only the glasses. A label whose entry itself carries the
    negation ("no beard") is a positive mention of that label.
    """
    norm = _normalise(text)
    pattern, entry_to_label = _lexicon_regex()
    out: list[Mention] = []
    for m in pattern.finditer(norm):
        clause_start = 0
        for b in _CLAUSE_BREAK.finditer(norm, 0, m.start()):
            clause_start = b.end()
        before = norm[clause_start:m.start()].split()[-_NEGATION_WINDOW:]
        window = " ".join(before)
        negated = any(re.search(r"(?<![\w'])" + re.escape(neg) + r"(?![\w])", window) for neg in _NEGATORS)
        out.append(Mention(entry_to_label[m.group(1)], negated, m.start(), m.end(), m.group(1)))
    return out


def mentioned_labels(text: str) -> tuple[set[str], set[str]]:
    """(labels asserted, labels denied) by ``text``. A label both asserted and denied counts as asserted."""
    pos: set[str] = set()
    neg: set[str] = set()
    for m in find_mentions(text):
        (neg if m.negated else pos).add(m.label)
    return pos, neg - pos


# ---------------------------------------------------------------------------------------------
# Rule-based textual mapping (App. B.3)

FeatureDict = dict[str, list[str]]  # group -> label names, in taxonomy order


def scores_to_features(scores: Mapping[str, float], threshold: float = 0.5) -> FeatureDict:
    """Extractor scores (label -> probability) to a feature dictionary.

    A label is kept when its score reaches ``threshold``; inside each exclusive set only the
    highest-scoring kept label survives, so the dictionary never contradicts itself.
    """
    bad = validate_labels(scores)
    if bad:
        raise ValueError(f"unknown taxonomy labels in scores: {bad}")
    kept = {n for n, s in scores.items() if s >= threshold}
    for ex in EXCLUSIVE_SETS:
        present = [n for n in ex if n in kept]
        if len(present) > 1:
            best = max(present, key=lambda n: (scores[n], -LABEL_NAMES.index(n)))
            kept -= set(present) - {best}
    return {g: [n for n in LABELS_BY_GROUP[g] if n in kept] for g in GROUPS}


_GROUP_HEADINGS = {"appearance": "Appearance", "action": "Actions", "emotion": "Emotion"}


def features_to_phrases(features: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Feature dictionary to phrases per group (the 'fine-grained description' of App. B.3)."""
    return {g: [BY_NAME[n].phrase for n in features.get(g, ())] for g in GROUPS}


def features_to_text(features: Mapping[str, Iterable[str]]) -> str:
    """Feature dictionary to one line per group, e.g. ``Appearance: black hair; eyeglasses``.

    ``text_to_features`` parses it back exactly.
    """
    phrases = features_to_phrases(features)
    return "\n".join(f"{_GROUP_HEADINGS[g]}: {'; '.join(phrases[g]) if phrases[g] else 'none'}" for g in GROUPS)


def text_to_features(text: str) -> FeatureDict:
    """Parse any text back into a feature dictionary through the lexicon (negated mentions dropped)."""
    pos, _ = mentioned_labels(text)
    return {g: [n for n in LABELS_BY_GROUP[g] if n in pos] for g in GROUPS}
