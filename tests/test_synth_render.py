"""FaceSynth labels are really in the pixels: each check measures rendered (or decoded) frames.

The generator's landmarks only say where to look (the eye, mouth, crown positions); what is asserted is
what the pixels there show: sclera visible or not, the head's shift between frames, the hair's colour,
the mouth's shape.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np
import pytest

from favchat.data.synth import SynthConfig, render_clip
from favchat.data.synth.generate import Rendered, get_identity, identity_of
from favchat.data.synth.identity import Identity
from favchat.data.video import read_all_frames, write_video

HAIR = ("black_hair", "blond_hair", "gray_hair", "brown_hair")
STILL = SynthConfig(seed=3, camera_motion=0.0, min_frames=32, max_frames=32)


def _find(cfg: SynthConfig, emotion: str, actions: tuple[str, ...], ok=lambda r: True,
          face_ok=lambda ident: True, **force) -> Rendered:
    """The first clip whose face passes ``face_ok``, can show the script, and whose clip passes ``ok``."""
    for i in range(400):
        if not face_ok(get_identity(cfg, identity_of(cfg, i))):
            continue
        try:
            r = render_clip(cfg, i, emotion=emotion, actions=actions, **force)
        except ValueError:  # e.g. eye actions behind sunglasses
            continue
        if ok(r):
            return r
    raise AssertionError(f"no clip for {emotion} {actions}")


def _plain_eyes(ident: Identity) -> bool:
    return not ident.pale_skin and ident.glasses is None


def _white(frame: np.ndarray, eye: tuple[float, ...]) -> int:
    """Sclera pixels in a box around one eye: unsaturated and much brighter than the skin around them."""
    x, y, w = eye
    x0, x1, y0, y1 = int(x - w * 1.3), int(np.ceil(x + w * 1.3)) + 1, int(y - w), int(np.ceil(y + w)) + 1
    patch = frame[max(0, y0):y1, max(0, x0):x1].astype(int)  # (h, w, 3)
    gray = patch.mean(-1)
    return int(((gray > np.median(gray) + 35) & (gray > 140) & (patch.max(-1) - patch.min(-1) < 40)).sum())


def _in_event(r: Rendered, label: str, t: int) -> bool:
    return any(e.label == label and e.start <= t < e.end for e in r.clip.events)


def test_blink_clip_has_frames_with_closed_eyes(tmp_path: Path):
    r = _find(STILL, "neutral", ("close_eyes",), face_ok=_plain_eyes)
    # Through the codec and back, as training sees it.
    frames = read_all_frames(write_video(tmp_path / "b.mp4", r.frames, fps=12.0))
    assert frames.shape == r.frames.shape
    white = np.array([_white(f, lm["eye_l"]) + _white(f, lm["eye_r"]) for f, lm in zip(frames, r.landmarks, strict=True)])
    inside = np.array([_in_event(r, "close_eyes", t) for t in range(len(frames))])
    open_level = np.median(white[~inside])
    assert open_level >= 4, white
    assert white[inside].min() <= 0.15 * open_level, (white, inside)  # some frame in the event: eyes shut
    # Outside it: eyes open. Not all frames are at the median: at this clip's end the measured eye white is
    # 0.47 of it already in the rendered frames (before the codec), so the bar is 0.4, well above shut (0.15).
    assert (white[~inside] >= 0.4 * open_level).all()


def test_wink_closes_one_eye_only():
    r = _find(STILL, "neutral", ("wink",), face_ok=_plain_eyes)
    side = "eye_l" if r.clip.meta["wink_side"] == "left" else "eye_r"
    other = "eye_r" if side == "eye_l" else "eye_l"
    t = min((t for t in range(len(r.frames)) if _in_event(r, "wink", t)),
            key=lambda t: _white(r.frames[t], r.landmarks[t][side]))
    before = _white(r.frames[0], r.landmarks[0][side])
    assert _white(r.frames[t], r.landmarks[t][side]) <= 0.15 * before
    assert _white(r.frames[t], r.landmarks[t][other]) >= 0.5 * _white(r.frames[0], r.landmarks[0][other]) > 0


def _head_shift(r: Rendered) -> np.ndarray:
    """Per-frame (dx, dy) of the inner face (eyes to mouth, inside the outline) against frame 0, by phase
    correlation of the pixels.  (T, 2)"""
    x, y, a, b = r.landmarks[0]["head"]
    y0, y1, x0, x1 = int(y - 0.4 * b), int(y + 0.75 * b), int(x - 0.65 * a), int(x + 0.65 * a)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32)[y0:y1, x0:x1] for f in r.frames]
    return np.array([cv2.phaseCorrelate(gray[0], g)[0] for g in gray])


@pytest.mark.parametrize("action, axis", [("nod", 1), ("shake_head", 0), ("turn", 0)])
def test_head_motion_is_along_the_right_axis(action: str, axis: int):
    r = _find(STILL, "neutral", (action,))
    moving = _head_shift(r)
    still = _head_shift(_find(STILL, "neutral", ()))
    span = moving.max(0) - moving.min(0)  # (2,) pixels
    assert span[axis] >= 0.15 * r.landmarks[0]["head"][2], span  # at least 15% of the face's half-width
    assert span[axis] > 2.5 * span[1 - axis], span
    assert span[axis] > 4 * (still.max(0) - still.min(0)).max()


def _hair_name(rgb: np.ndarray) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(rgb / 255.0))
    if s < 0.15 and v > 0.4:
        return "gray_hair"
    if v < 0.21:
        return "black_hair"
    return "blond_hair" if 0.085 < h < 0.2 and v > 0.45 else "brown_hair"


def test_hair_colour_label_matches_hair_pixels():
    cfg = SynthConfig(seed=5, min_frames=2, max_frames=2)
    seen = set()
    for i in range(0, 160, 4):  # one clip per identity
        r = render_clip(cfg, i)
        colours = [n for n in r.clip.labels["appearance"] if n in HAIR]
        if r.identity.bald:
            assert colours == [] and "bald" in r.clip.labels["appearance"]
            continue
        if r.identity.hat:  # the crown is under the hat
            continue
        x, y = r.landmarks[0]["hair"]
        w = max(2, int(r.landmarks[0]["head"][2] * 0.15))
        patch = r.frames[0][int(y) - 1:int(y) + 2, int(x) - w:int(x) + w + 1].reshape(-1, 3)
        name = _hair_name(np.median(patch, 0))
        assert colours == [name], (i, colours, name, np.median(patch, 0))
        seen.add(name)
    assert seen == set(HAIR)


def test_wavy_hair_shows_at_64_px():
    """Wavy hair changes the pixels of a 64 px frame, the size the demo's model reads: the crown's outline and the
    strands snake, and long hair's sides ripple (version 1 drew a 0.7-pixel ripple that the probe of
    benchmarks/bench_synth_visibility.py could not read)."""
    from dataclasses import replace

    from favchat.data.synth.render import FaceState, Renderer, make_scene

    cfg = SynthConfig(seed=0)
    changed = []
    for j in range(40):
        ident = get_identity(cfg, j)
        if ident.bald or (ident.hat and not ident.long_hair):  # FaceSynth draws no waves under a hat
            continue
        scene = replace(make_scene(np.random.default_rng(j), 64), noise=0.0)  # differences are the hair's alone
        straight, wavy = (Renderer(replace(ident, wavy_hair=w), scene, np.random.default_rng(0)).render(FaceState())
                          for w in (False, True))
        changed.append(int((np.abs(wavy.astype(int) - straight.astype(int)).max(-1) > 25).sum()))
    # pixels (of 4,096) that change by more than 25 grey levels: version 1 changed a median of 28, at least 0
    assert np.median(changed) >= 80 and min(changed) >= 40, changed


def _lip_line(frame: np.ndarray, mouth: tuple[float, ...]) -> np.ndarray:
    """Row of the darkest pixel in each column across the mouth (the lip parting line).  (columns,)"""
    x, y, w = mouth
    x0, x1 = int(x - w * 0.9), int(np.ceil(x + w * 0.9)) + 1
    y0, y1 = int(y - w * 0.8), int(np.ceil(y + w * 0.8)) + 1
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[y0:y1, x0:x1].astype(float)
    return gray.argmin(0) + y0


def _bend(frame: np.ndarray, mouth: tuple[float, ...]) -> float:
    """How far the lip line's middle sits below its ends (pixels): > 0 for a smile, < 0 for a downturn."""
    line = _lip_line(frame, mouth)
    k = max(1, len(line) // 5)
    mid = line[len(line) // 2 - k // 2: len(line) // 2 + k // 2 + 1]
    return float(np.mean(mid) - np.mean([line[:k], line[-k:]]))


def test_smile_changes_the_mouth():
    cfg = SynthConfig(seed=7, camera_motion=0.0, min_frames=24, max_frames=24)
    r = _find(cfg, "happy", (), ok=lambda r: not r.script.open_smile,
              face_ok=lambda f: f.beard in ("none", "stubble"), emotion_start=10)
    smile = next(e for e in r.clip.events if e.label == "smile")
    assert smile.start == 10 and smile.end == 24
    mouth = r.landmarks[0]["mouth"]

    def bend(frames: slice) -> float:  # on the mean of a few frames, so sensor noise averages out
        return _bend(r.frames[frames].mean(0).round().astype(np.uint8), mouth)

    # Frames 0-7 are neutral (the expression ramps in over the 3 frames before the onset): two neutral
    # stretches agree, and the smiling end of the clip bends the lip line up at the corners.
    neutral_a, neutral_b, smiling = bend(slice(0, 4)), bend(slice(4, 8)), bend(slice(-4, None))
    assert abs(neutral_b - neutral_a) <= 0.75, (neutral_a, neutral_b)
    assert smiling - neutral_a >= 1.25, (neutral_a, smiling)


def test_emotions_are_visible_in_eyes_mouth_and_face():
    """The same face and scene in each emotion's full expression, compared with neutral on the pixels."""
    from dataclasses import replace

    from favchat.data.synth.events import EXPRESSIONS
    from favchat.data.synth.render import FaceState, Renderer, make_scene

    cfg = SynthConfig(seed=21)
    faces = [get_identity(cfg, j) for j in range(60)]
    faces = [f for f in faces if f.glasses is None and not f.pale_skin and f.beard in ("none", "stubble")][:4]
    assert len(faces) == 4
    for j, ident in enumerate(faces):
        scene = replace(make_scene(np.random.default_rng(j), 112), noise=0.0)  # differences are the face's alone
        ren = Renderer(ident, scene, np.random.default_rng(j))
        states = {e: replace(FaceState(), **ex) for e, ex in EXPRESSIONS.items()}
        fr = {e: ren.render(st) for e, st in states.items()}
        lm = ren.landmarks(FaceState())
        white = {e: _white(f, lm["eye_l"]) + _white(f, lm["eye_r"]) for e, f in fr.items()}
        assert white["surprise"] > 1.2 * white["neutral"] and white["fear"] > 1.2 * white["neutral"], white
        assert white["sad"] < white["neutral"] and white["disgust"] < white["neutral"], white
        bend = {e: _bend(fr[e], lm["mouth"]) for e in ("happy", "neutral", "sad")}
        assert bend["happy"] > bend["neutral"] + 1 > bend["sad"] + 2, bend
        x, y, a, b = lm["head"]
        roi = (slice(int(y - 0.6 * b), int(y + 0.8 * b)), slice(int(x - 0.8 * a), int(x + 0.8 * a)))
        for e in ("anger", "disgust", "surprise", "fear", "sad", "happy"):
            d = np.abs(fr[e][roi].astype(float) - fr["neutral"][roi].astype(float)).mean()
            assert d > 1.0, (e, d)  # a mean change of more than one grey level over the whole face
