"""FaceSynth scripts: what a person feels and does in one clip, and the per-frame face states it implies.

A clip shows one emotion (clip-wide, possibly setting in after a neutral start) and up to three actions,
each an event with an onset and an offset in frames. Actions are chosen to fit the emotion (a sad
person does not laugh) and the face (eye actions are not scripted behind sunglasses, where no pixel
would show them). Two actions are tied to emotions because the expression *is* the action: a happy
face smiles, an angry or disgusted face frowns (brows pulled down and together); they span the
emotion's own event.

Every action is held at full strength long enough that any uniform sampling of ``MIN_SAMPLED_FRAMES`` or
more frames (``favchat.data.video.sample_indices``, what the model's processor does) catches it at full
strength at least once (``full_strength_frames``); an event that cannot get that long in what is left of
the clip is not scripted, so no label names what the sampled frames cannot show.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from favchat.data.manifest import Event
from favchat.data.synth.identity import Identity
from favchat.data.synth.render import FaceState

EMOTIONS = ("neutral", "happy", "sad", "surprise", "anger", "disgust", "fear")
EMOTION_WEIGHTS = (0.22, 0.16, 0.13, 0.13, 0.12, 0.12, 0.12)
# Actions scripted as free events (non-overlapping, so their order is well defined).
ACTIONS = ("close_eyes", "wink", "squint", "talk", "laugh", "yawn", "pout", "nod", "shake_head", "turn", "look_around")
EYE_ACTIONS = frozenset({"close_eyes", "wink", "squint", "look_around"})
# The action an emotion's expression performs, spanning the emotion's event.
LINKED_ACTION = {"happy": "smile", "anger": "frown", "disgust": "frown"}
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "neutral": ("close_eyes", "wink", "squint", "talk", "yawn", "pout", "nod", "shake_head", "turn", "look_around"),
    "happy": ("close_eyes", "wink", "talk", "laugh", "nod", "shake_head", "turn"),
    "sad": ("close_eyes", "talk", "yawn", "pout", "nod", "shake_head", "turn"),
    "surprise": ("close_eyes", "talk", "nod", "shake_head", "turn", "look_around"),
    "anger": ("close_eyes", "squint", "talk", "nod", "shake_head", "turn"),
    "disgust": ("close_eyes", "squint", "talk", "pout", "shake_head", "turn"),
    "fear": ("close_eyes", "talk", "shake_head", "turn", "look_around"),
}
# Models read at least this many frames of a clip, spread uniformly (the presets' num_general_frames).
MIN_SAMPLED_FRAMES = 8
# (min, max) event length in frames at 12 fps, before full_strength_frames lengthens the short ones.
DURATION: dict[str, tuple[int, int]] = {
    "close_eyes": (3, 7), "wink": (4, 6), "squint": (5, 9), "talk": (8, 16), "laugh": (8, 14),
    "yawn": (10, 16), "pout": (6, 10), "nod": (8, 12), "shake_head": (8, 12), "turn": (8, 14),
    "look_around": (10, 16),
}

# The expression of each emotion at full intensity, as face-state values (neutral: the defaults).
EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"mouth_curve": 0.9, "mouth_width": 1.1, "cheek_raise": 0.6, "eye_l": 0.85, "eye_r": 0.85},
    "sad": {"mouth_curve": -0.8, "brow_tilt": 1.0, "brow_raise": 0.1, "eye_l": 0.7, "eye_r": 0.7, "pitch": 0.2},
    "surprise": {"brow_raise": 1.0, "eye_l": 1.4, "eye_r": 1.4, "mouth_open": 0.6, "mouth_width": 0.7},
    "anger": {"brow_raise": -0.8, "brow_tilt": -1.0, "brow_squeeze": 1.0, "mouth_curve": -0.45,
              "mouth_width": 0.85, "eye_l": 0.8, "eye_r": 0.8},
    "disgust": {"brow_raise": -0.5, "brow_tilt": -0.4, "brow_squeeze": 0.6, "nose_wrinkle": 1.0, "lip_raise": 1.0,
                "mouth_curve": -0.5, "eye_l": 0.65, "eye_r": 0.65},
    "fear": {"brow_raise": 0.9, "brow_tilt": 0.8, "brow_squeeze": 0.7, "eye_l": 1.35, "eye_r": 1.35,
             "mouth_open": 0.3, "mouth_width": 1.25, "mouth_curve": -0.3},
}
_NEUTRAL = FaceState()
_FLOAT_FIELDS = tuple(f.name for f in fields(FaceState) if f.type in ("float", float))


@dataclass(frozen=True)
class Script:
    n_frames: int
    emotion: str
    emotion_start: int  # frame where the emotion's expression has set in (0: from the start)
    events: tuple[Event, ...]  # the free action events, in time order
    wink_side: int = 0  # 0 frame-left eye, 1 frame-right eye
    turn_side: int = 1  # -1 or 1
    open_smile: bool = False  # happy: a smile with parted lips and teeth

    @property
    def action_labels(self) -> list[str]:
        out = [e.label for e in self.events]
        if self.emotion in LINKED_ACTION:
            out.append(LINKED_ACTION[self.emotion])
        return list(dict.fromkeys(out))

    def all_events(self) -> list[Event]:
        """Free action events, plus the emotion's event and its linked action's event (non-neutral only)."""
        out = list(self.events)
        if self.emotion != "neutral":
            out.append(Event(self.emotion, self.emotion_start, self.n_frames))
            if self.emotion in LINKED_ACTION:
                out.append(Event(LINKED_ACTION[self.emotion], self.emotion_start, self.n_frames))
        return sorted(out, key=lambda e: (e.start, e.end, e.label))


def full_strength_frames(n_frames: int, min_sampled: int = MIN_SAMPLED_FRAMES) -> int:
    """Frames an event must hold at full strength so that every uniform sampling of ``min_sampled`` or more
    of the clip's ``n_frames`` frames lands on one of them: consecutive samples are at most
    ceil(n / k) apart, and the first and last lie within n / 2k of the clip's ends."""
    return max(-(-n_frames // min_sampled), n_frames // (2 * min_sampled) + 1)


def sample_script(rng: np.random.Generator, ident: Identity, n_frames: int, emotion: str | None = None,
                  actions: tuple[str, ...] | None = None, emotion_start: int | None = None) -> Script:
    """A random script for a clip of ``n_frames``; ``emotion`` / ``actions`` / ``emotion_start`` force a
    choice (tests, demos)."""
    emotion = emotion or str(rng.choice(EMOTIONS, p=EMOTION_WEIGHTS))
    if emotion not in EMOTIONS:
        raise ValueError(f"FaceSynth renders the emotions {EMOTIONS}, not {emotion!r}")
    allowed = [a for a in COMPATIBLE[emotion] if not (ident.glasses == "sunglasses" and a in EYE_ACTIONS)]
    if actions is None:
        k = int(rng.choice([0, 1, 2, 3], p=[0.1, 0.45, 0.3, 0.15]))
        actions = tuple(str(a) for a in rng.permutation(allowed)[:k])
    else:
        bad = [a for a in actions if a not in allowed]
        if bad:
            raise ValueError(f"actions {bad} cannot be rendered for emotion {emotion!r} on this face "
                             f"(allowed: {allowed})")
    late = rng.random() < 0.3 and n_frames >= 16
    drawn = int(rng.integers(n_frames // 5, n_frames // 2)) if late else 0
    emotion_start = drawn if emotion_start is None else emotion_start
    if emotion == "neutral":
        emotion_start = 0
    if not 0 <= emotion_start < n_frames:
        raise ValueError(f"emotion_start must be in [0, {n_frames}), got {emotion_start}")
    # Place events one after another with random gaps; drop those that do not fit. An event ramps up over
    # its first frame and down over its last (_envelope), so its full strength lasts its length minus 2.
    events: list[Event] = []
    t = int(rng.integers(0, 3))
    need = full_strength_frames(n_frames) + 2
    for a in actions:
        lo, hi = max(DURATION[a][0], need), max(DURATION[a][1], need)
        room = n_frames - t
        if room < lo:
            break
        d = int(rng.integers(lo, min(hi, room) + 1))
        events.append(Event(a, t, t + d))
        t += d + int(rng.integers(0, 3))
    return Script(n_frames=n_frames, emotion=emotion, emotion_start=emotion_start, events=tuple(events),
                  wink_side=int(rng.integers(0, 2)), turn_side=int(rng.choice([-1, 1])),
                  open_smile=bool(rng.random() < 0.5))


def _envelope(t: int, ev: Event, ramp: int = 2) -> float:
    """0 outside the event, rising over ``ramp`` frames to 1 and falling back at its end."""
    if not ev.start <= t < ev.end:
        return 0.0
    k = min(t - ev.start + 1, ev.end - t)
    return min(1.0, k / (ramp + 1) * 2) if ev.end - ev.start > 3 else (1.0 if k >= 2 else 0.5)


def face_states(script: Script, rng: np.random.Generator) -> list[FaceState]:
    """The face state of every frame: the emotion's expression, the events on top, small head jitter."""
    expr = EXPRESSIONS[script.emotion]
    jitter = rng.normal(0, 0.03, (script.n_frames, 2)).cumsum(0) * 0.3  # slow head sway
    out = []
    for t in range(script.n_frames):
        w = 0.0 if script.emotion == "neutral" else float(np.clip((t - script.emotion_start + 3) / 3, 0, 1))
        vals = {f: getattr(_NEUTRAL, f) + w * (expr.get(f, getattr(_NEUTRAL, f)) - getattr(_NEUTRAL, f))
                for f in _FLOAT_FIELDS}
        st = replace(_NEUTRAL, **vals)
        if script.emotion == "happy" and script.open_smile and w > 0.5:
            st.mouth_open, st.teeth = max(st.mouth_open, 0.3), True
        st.yaw += float(jitter[t, 0])
        st.pitch += float(jitter[t, 1])
        for ev in script.events:
            env = _envelope(t, ev)
            if env > 0:
                _apply(st, ev, t, env, script)
        out.append(st)
    return out


def _apply(st: FaceState, ev: Event, t: int, env: float, script: Script) -> None:
    """Lay one action over the face state at frame ``t`` with strength ``env``."""
    phase = (t - ev.start) / max(1, ev.end - ev.start)  # 0..1 through the event
    a = ev.label
    if a == "close_eyes":
        st.eye_l *= 1 - env
        st.eye_r *= 1 - env
    elif a == "wink":
        if script.wink_side == 0:
            st.eye_l *= 1 - env
        else:
            st.eye_r *= 1 - env
        st.mouth_curve = max(st.mouth_curve, 0.3 * env)
    elif a == "squint":
        st.eye_l = min(st.eye_l, 1 - 0.62 * env)
        st.eye_r = min(st.eye_r, 1 - 0.62 * env)
        st.brow_raise -= 0.3 * env
    elif a == "talk":
        st.mouth_open = max(st.mouth_open, env * (0.2 + 0.45 * abs(np.sin(phase * np.pi * (ev.end - ev.start) / 2.2))))
    elif a == "laugh":
        st.mouth_open = max(st.mouth_open, env * (0.55 + 0.35 * abs(np.sin(phase * np.pi * 5))))
        st.mouth_curve, st.teeth, st.cheek_raise = 1.0, True, 1.0
        st.eye_l, st.eye_r = min(st.eye_l, 0.55), min(st.eye_r, 0.55)
        st.pitch -= 0.15 * env
    elif a == "yawn":
        st.mouth_open = max(st.mouth_open, env * 1.0)
        st.mouth_width = 0.75
        st.eye_l, st.eye_r = min(st.eye_l, 1 - 0.7 * env), min(st.eye_r, 1 - 0.7 * env)
        st.pitch -= 0.25 * env
        st.brow_raise += 0.3 * env
    elif a == "pout":
        st.pucker = env
        st.mouth_open = 0.0
    elif a == "nod":
        st.pitch += 0.9 * env * float(np.sin(phase * 2 * np.pi * 1.5))
    elif a == "shake_head":
        st.yaw += 0.65 * env * float(np.sin(phase * 2 * np.pi * 1.5))
    elif a == "turn":
        st.yaw += 0.8 * env * script.turn_side
    elif a == "look_around":
        st.gaze_x = env * float(np.sin(phase * 2 * np.pi))
        st.gaze_y = -0.3 * env * float(np.cos(phase * 2 * np.pi))
        st.yaw += 0.3 * env * float(np.sin(phase * 2 * np.pi))
