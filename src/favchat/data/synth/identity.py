"""FaceSynth identities: the appearance of one synthetic person, sampled from a seed.

An identity fixes everything about a face that does not change within or across its clips: the
appearance labels it carries (hair colour and style, glasses, facial hair, hat, jewellery, skin) and
the continuous look that makes it an individual (face shape and proportions, colours). Clips of one
identity share all of it, so splits can hold identities out.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

RGB = tuple[float, float, float]  # 0..255

HAIR_COLOURS = ("black_hair", "blond_hair", "gray_hair", "brown_hair")
BEARDS = ("none", "mustache", "goatee", "goatee_mustache", "full", "stubble")

# (hue range in turns, saturation range, value range): colours a person would call by the label's name.
_HAIR_HSV: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "black_hair": ((0.02, 0.10), (0.10, 0.40), (0.06, 0.15)),
    "brown_hair": ((0.04, 0.08), (0.50, 0.75), (0.28, 0.45)),
    "blond_hair": ((0.11, 0.14), (0.40, 0.60), (0.78, 0.92)),
    "gray_hair": ((0.0, 1.0), (0.00, 0.05), (0.62, 0.84)),
}


def hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (r * 255.0, g * 255.0, b * 255.0)


@dataclass(frozen=True)
class Identity:
    """One synthetic person. Proportions are fractions of the face's half-width ``a`` / half-height ``b``."""

    name: str
    # Appearance labels (what the ground truth says).
    hair_colour: str | None  # one of HAIR_COLOURS; None when bald
    long_hair: bool
    bangs: bool
    wavy_hair: bool
    glasses: str | None  # "eyeglasses" | "sunglasses" | None
    beard: str  # one of BEARDS
    hat: bool
    earrings: bool
    lipstick: bool
    necklace: bool
    pale_skin: bool
    rosy_cheeks: bool
    bushy_eyebrows: bool
    # The continuous look (no label depends on it).
    skin: RGB
    hair: RGB
    iris: RGB
    shirt: RGB
    hat_colour: RGB
    lip: RGB
    face_w: float  # face half-width as a fraction of the frame side
    aspect: float  # half-height / half-width
    eye_dx: float  # eye centre distance from the midline, fraction of a
    eye_y: float  # eye height below the face centre, fraction of b (negative: above)
    eye_w: float  # eye half-width, fraction of a
    nose_len: float  # nose tip below the eye line, fraction of b
    mouth_y: float  # mouth centre below the face centre, fraction of b
    mouth_w: float  # mouth half-width, fraction of a
    brow_gap: float  # brow height above the eye, fraction of b
    jaw: float  # 0 round .. 1 square chin

    @property
    def bald(self) -> bool:
        return self.hair_colour is None

    def labels(self) -> list[str]:
        """The appearance labels this person shows (taxonomy names, in taxonomy order later)."""
        out: list[str] = []
        if self.bald:
            out.append("bald")
        else:
            out.append(self.hair_colour)  # type: ignore[arg-type]
            out += ["long_hair"] * self.long_hair + ["bangs"] * self.bangs + ["wavy_hair"] * self.wavy_hair
        if self.glasses:
            out.append(self.glasses)
        out += {
            "none": ["no_beard"], "mustache": ["mustache"], "goatee": ["goatee"],
            "goatee_mustache": ["goatee", "mustache"], "full": ["facial_hair", "mustache"], "stubble": ["stubbly"],
        }[self.beard]
        for flag, name in ((self.hat, "wearing_hat"), (self.earrings, "wearing_earrings"),
                           (self.lipstick, "wearing_lipstick"), (self.necklace, "wearing_necklace"),
                           (self.pale_skin, "pale_skin"), (self.rosy_cheeks, "rosy_cheeks"),
                           (self.bushy_eyebrows, "bushy_eyebrows")):
            if flag:
                out.append(name)
        return out


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def hair_rgb(rng: np.random.Generator, colour: str) -> RGB:
    h, s, v = _HAIR_HSV[colour]
    return hsv(_uniform(rng, h), _uniform(rng, s), _uniform(rng, v))


def sample_identity(rng: np.random.Generator, name: str) -> Identity:
    """A random person. Label frequencies are set so every rendered label is common enough to learn."""
    bald = rng.random() < 0.12
    hair_colour = None if bald else str(rng.choice(HAIR_COLOURS))
    long_hair = (not bald) and rng.random() < 0.4
    wavy = (not bald) and rng.random() < 0.3
    hat = rng.random() < 0.15
    bangs = (not bald) and (not hat) and rng.random() < 0.3
    wavy = wavy and (long_hair or not hat)  # a hat hides the crown's waves; long hair's sides still show them
    g = rng.random()
    glasses = "eyeglasses" if g < 0.22 else "sunglasses" if g < 0.34 else None
    beard = str(rng.choice(BEARDS, p=[0.5, 0.1, 0.08, 0.07, 0.12, 0.13]))
    pale = rng.random() < 0.2
    if pale:
        skin = hsv(rng.uniform(0.05, 0.09), rng.uniform(0.12, 0.22), rng.uniform(0.93, 0.99))
    else:
        skin = hsv(rng.uniform(0.04, 0.09), rng.uniform(0.30, 0.55), rng.uniform(0.45, 0.85))
    lip_base = hsv(rng.uniform(0.97, 1.02), rng.uniform(0.35, 0.5), rng.uniform(0.45, 0.65))
    lipstick = rng.random() < 0.2
    hair = hair_rgb(rng, hair_colour) if hair_colour else hsv(0.07, 0.5, 0.25)  # bald: brows stay dark brown
    return Identity(
        name=name, hair_colour=hair_colour, long_hair=bool(long_hair), bangs=bool(bangs), wavy_hair=bool(wavy),
        glasses=glasses, beard=beard, hat=bool(hat), earrings=bool(rng.random() < 0.2), lipstick=bool(lipstick),
        necklace=bool(rng.random() < 0.15), pale_skin=bool(pale), rosy_cheeks=bool(rng.random() < 0.2),
        bushy_eyebrows=bool(rng.random() < 0.2),
        skin=skin, hair=hair,
        iris=hsv(rng.uniform(0.05, 0.6), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.45)),
        shirt=hsv(rng.random(), rng.uniform(0.1, 0.8), rng.uniform(0.2, 0.9)),
        hat_colour=hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.15, 0.8)),
        lip=hsv(0.98, rng.uniform(0.75, 0.9), rng.uniform(0.6, 0.8)) if lipstick else lip_base,
        face_w=float(rng.uniform(0.23, 0.27)), aspect=float(rng.uniform(1.22, 1.38)),
        eye_dx=float(rng.uniform(0.36, 0.42)), eye_y=float(rng.uniform(-0.16, -0.08)),
        eye_w=float(rng.uniform(0.17, 0.21)), nose_len=float(rng.uniform(0.30, 0.38)),
        mouth_y=float(rng.uniform(0.44, 0.52)), mouth_w=float(rng.uniform(0.28, 0.36)),
        brow_gap=float(rng.uniform(0.17, 0.22)), jaw=float(rng.uniform(0.0, 1.0)),
    )
