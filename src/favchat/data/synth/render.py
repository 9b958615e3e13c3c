"""FaceSynth rendering: one frame of one identity in one facial state, drawn with OpenCV.

The face is built the way a face detector expects one: a shaded skin oval (lit from one side, darker
toward its rim), dark eye sockets under dark brows, a lighter nose bridge between them, a shadowed
nose tip with nostrils, and a mouth. Drawing happens at ``SUPERSAMPLE`` times the output size on a
float canvas and is area-downsampled, which anti-aliases every edge.

Geometry is in face units: centre ``(cx, cy)``, half-width ``a``, half-height ``b``. ``FaceState``
holds what moves within a clip (head pose, eyelids, gaze, brows, mouth); ``Scene`` what stays fixed
for a clip (frame size, background, lighting, noise, camera path).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from favchat.data.synth.identity import Identity

SUPERSAMPLE = 2
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing
_ONE = 1 << _SHIFT


@dataclass
class FaceState:
    """What the face does in one frame. Neutral is all defaults."""

    yaw: float = 0.0  # -1 (facing frame left) .. 1 (facing frame right)
    pitch: float = 0.0  # -1 (up) .. 1 (down)
    roll: float = 0.0  # radians, in-plane tilt
    eye_l: float = 1.0  # eyelid openness of the eye on the frame's left: 0 closed, 1 normal, 1.4 wide
    eye_r: float = 1.0
    gaze_x: float = 0.0  # -1 .. 1 pupil shift
    gaze_y: float = 0.0
    brow_raise: float = 0.0  # -1 lowered .. 1 raised
    brow_tilt: float = 0.0  # inner ends: + raised (sad, fear), - lowered (anger)
    brow_squeeze: float = 0.0  # 0 .. 1 brows drawn together
    mouth_open: float = 0.0  # 0 .. 1 jaw drop
    mouth_curve: float = 0.0  # -1 corners down .. 1 corners up
    mouth_width: float = 1.0  # scale of the mouth's half-width
    teeth: bool = False  # show the upper teeth when the mouth is open
    pucker: float = 0.0  # 0 .. 1 pushed-forward lips (pout)
    lip_raise: float = 0.0  # 0 .. 1 raised upper lip on one side (disgust)
    nose_wrinkle: float = 0.0  # 0 .. 1 lines across the nose bridge (disgust)
    cheek_raise: float = 0.0  # 0 .. 1 raised cheeks (smile, laugh): lower lids push up


@dataclass(frozen=True)
class Scene:
    """What is fixed for one clip: size, background, lighting, noise, where the head sits."""

    size: int  # output frames are size x size
    background: np.ndarray  # (S*SUPERSAMPLE + 2*margin, same, 3) float32, cropped per frame for camera motion
    margin: int  # supersampled pixels of background beyond the frame on each side
    light: np.ndarray  # (S*SUPERSAMPLE, S*SUPERSAMPLE, 1) float32 multiplicative lighting field
    light_dir: tuple[float, float]  # unit vector toward the light, face shading uses it
    noise: float  # std of the additive Gaussian noise (0..255 scale)
    head_x: float  # face centre, fraction of the frame
    head_y: float
    scale: float  # multiplies the identity's face width


def make_scene(rng: np.random.Generator, size: int, scale_range: tuple[float, float] = (0.92, 1.12)) -> Scene:
    s = size * SUPERSAMPLE
    margin = s // 8
    full = s + 2 * margin
    # Background: a two-colour gradient with a few soft blocks (a room, a window, furniture).
    c0 = rng.uniform(30, 230, 3).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-80, 80, 3), 0, 255).astype(np.float32)
    t = np.linspace(0.0, 1.0, full, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + 0.5 * (np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None] - 0.5 * (np.cos(ang) + np.sin(ang))), 0, 1)
    bg = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]  # (full, full, 3)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.integers(0, full, 2)
        w, h = rng.integers(full // 8, full // 2, 2)
        col = tuple(float(v) for v in rng.uniform(20, 235, 3))
        cv2.rectangle(bg, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), col, -1)
    bg = cv2.GaussianBlur(bg, (0, 0), full / 60)
    # Lighting: a linear gradient across the frame toward the light, strength varies per clip.
    la = rng.uniform(0, 2 * np.pi)
    lx, ly = float(np.cos(la)), float(np.sin(la))
    strength = rng.uniform(0.05, 0.25)
    g = (np.arange(s, dtype=np.float32) / s - 0.5)
    light = 1.0 + strength * (lx * g[None, :] + ly * g[:, None]) * 2 * rng.uniform(0.8, 1.2)
    light = (light * rng.uniform(0.85, 1.1)).astype(np.float32)[..., None]
    return Scene(size=size, background=bg.astype(np.float32), margin=margin, light=light, light_dir=(lx, ly),
                 noise=float(rng.uniform(1.0, 6.0)), head_x=float(rng.uniform(0.44, 0.56)),
                 head_y=float(rng.uniform(0.44, 0.52)), scale=float(rng.uniform(*scale_range)))


def _pt(x: float, y: float) -> tuple[int, int]:
    return (int(round(x * _ONE)), int(round(y * _ONE)))


def _poly(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32).reshape(-1, 1, 2)


def _ellipse(img: np.ndarray, c: tuple[float, float], ax: tuple[float, float], angle: float, col, thick: int = -1,
             a0: float = 0, a1: float = 360) -> None:
    cv2.ellipse(img, _pt(*c), _pt(max(ax[0], 0.5), max(ax[1], 0.5)), angle, a0, a1, col, thick, cv2.LINE_AA, _SHIFT)


def _fill(img: np.ndarray, pts: np.ndarray, col) -> None:
    cv2.fillPoly(img, [_poly(pts)], col, cv2.LINE_AA, _SHIFT)


def _line(img: np.ndarray, pts: np.ndarray, col, thick: float) -> None:
    cv2.polylines(img, [_poly(pts)], False, col, max(1, int(round(thick))), cv2.LINE_AA, _SHIFT)


def _arc(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int = 12) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)  # (n, 2)


def _wavy(points: np.ndarray, amp: float, waves: float) -> np.ndarray:
    """A polyline (n, 2) displaced along its normals by a sine of ``waves`` periods and amplitude ``amp``."""
    step = np.gradient(points, axis=0)  # (n, 2)
    normal = np.stack([-step[:, 1], step[:, 0]], 1) / np.linalg.norm(step, axis=1, keepdims=True)
    t = np.linspace(0.0, 1.0, len(points))
    return points + normal * (amp * np.sin(2 * np.pi * waves * t))[:, None]


def _dark(col, f: float) -> tuple[float, float, float]:
    return tuple(float(c) * f for c in col)  # type: ignore[return-value]


class Renderer:
    """Draws frames of one identity in one scene. ``render(state, offset)`` returns (size, size, 3) uint8 RGB."""

    def __init__(self, ident: Identity, scene: Scene, rng: np.random.Generator):
        self.id, self.scene = ident, scene
        self.s = scene.size * SUPERSAMPLE
        self.rng = rng
        # Stubble: a fixed speckle pattern in face-normalised coordinates, re-placed every frame.
        self.stubble = rng.uniform(-1, 1, (320, 2)) if ident.beard == "stubble" else None
        yy, xx = np.mgrid[0:self.s, 0:self.s].astype(np.float32)
        self._xx, self._yy = xx, yy

    # -- geometry --------------------------------------------------------------------------------
    def _frame_geometry(self, st: FaceState, offset: tuple[float, float]) -> dict[str, float]:
        ident, sc, s = self.id, self.scene, self.s
        a = ident.face_w * sc.scale * s
        b = a * ident.aspect
        cx = (sc.head_x + offset[0]) * s + st.yaw * 0.06 * a
        cy = (sc.head_y + offset[1]) * s + st.pitch * 0.10 * b
        # Features slide across the face when the head turns or nods (a cheap 3-D rotation).
        fx = st.yaw * 0.42 * a
        fy = st.pitch * 0.16 * b
        return {"a": a, "b": b, "cx": cx, "cy": cy, "fx": fx, "fy": fy}

    def landmarks(self, st: FaceState, offset: tuple[float, float] = (0.0, 0.0)) -> dict[str, tuple[float, ...]]:
        """Where things are in the output frame (pixels): ``eye_l``/``eye_r`` (x, y, half-width), ``mouth``
        (x, y, half-width), ``head`` (x, y, a, b) and ``hair`` (x, y), a point on the crown. Tests use them
        to know where to look; what they check is the pixels there."""
        g = self._frame_geometry(st, offset)
        k = 1.0 / SUPERSAMPLE
        (lx, ly, lw), (rx, ry, rw) = self._eye_centres(g, st)
        a, b, cx, cy, fx, fy = g["a"], g["b"], g["cx"], g["cy"], g["fx"], g["fy"]
        my = cy + fy * 1.1 + self.id.mouth_y * b
        return {"eye_l": (lx * k, ly * k, lw * k), "eye_r": (rx * k, ry * k, rw * k),
                "mouth": ((cx + fx * 1.1) * k, my * k, self.id.mouth_w * a * k),
                "head": (cx * k, cy * k, a * k, b * k), "hair": ((cx + fx * 0.15) * k, (cy - b * 0.92) * k)}

    # -- frame -----------------------------------------------------------------------------------
    def render(self, st: FaceState, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        ident, sc, s = self.id, self.scene, self.s
        g = self._frame_geometry(st, offset)
        a, b, cx, cy, fx, fy = g["a"], g["b"], g["cx"], g["cy"], g["fx"], g["fy"]
        m = sc.margin
        ox, oy = int(round(m - offset[0] * s * 0.5)), int(round(m - offset[1] * s * 0.5))  # background parallax
        img = sc.background[oy:oy + s, ox:ox + s].copy()  # (s, s, 3)
        skin = ident.skin
        hair = ident.hair

        # Body: shoulders, neck; long hair falls behind the head onto the shoulders.
        _ellipse(img, (cx, cy + b * 2.25), (a * 2.3, b * 1.0), 0, ident.shirt)
        if ident.long_hair and not ident.bald:
            top = _arc(cx, cy - b * 0.1, a * 1.2, b * 1.02, np.pi, 2 * np.pi, 24)
            right = np.linspace([cx + a * 1.2, cy - b * 0.1], [cx + a * 1.35, cy + b * 1.55], 16)
            left = np.linspace([cx - a * 1.35, cy + b * 1.55], [cx - a * 1.2, cy - b * 0.1], 16)
            if ident.wavy_hair:  # the hanging sides ripple (about 2 px at 64 px)
                right, left = _wavy(right, a * 0.12, 2.5), _wavy(left, a * 0.12, 2.5)
            _fill(img, np.concatenate([top, right, left]), _dark(hair, 0.85))
        _fill(img, np.array([[cx - a * 0.45, cy + b * 0.6], [cx + a * 0.45, cy + b * 0.6],
                             [cx + a * 0.5, cy + b * 1.5], [cx - a * 0.5, cy + b * 1.5]]), _dark(skin, 0.8))
        if ident.necklace:
            for t in np.linspace(0.15, 0.85, 9) * np.pi:
                _ellipse(img, (cx - fx * 0.3 + np.cos(t) * a * 0.5, cy + b * 1.2 + np.sin(t) * b * 0.22),
                         (a * 0.05, a * 0.05), 0, (235.0, 200.0, 80.0))
        # Ears (the far ear hides when the head turns).
        for side in (-1, 1):
            if side * st.yaw > 0.55:
                continue
            ex = cx + side * a * (0.98 - 0.25 * max(0.0, side * st.yaw)) + fx * 0.15
            _ellipse(img, (ex, cy + fy * 0.5), (a * 0.14, b * 0.17), 0, _dark(skin, 0.88))

        # Face oval, chin squared by the jaw parameter (a second, flatter ellipse).
        face = np.zeros((s, s), np.uint8)
        _ellipse(face, (cx, cy), (a, b), np.degrees(st.roll), 255)
        _ellipse(face, (cx, cy + b * 0.25), (a * (0.78 + 0.15 * ident.jaw), b * 0.75), np.degrees(st.roll), 255)
        self._shade_skin(img, face, g, st)

        # Facial features.
        self._eyes(img, g, st)
        self._brows(img, g, st)
        self._nose(img, g, st)
        self._mouth(img, g, st)
        self._facial_hair(img, g, st)
        if not ident.bald:
            self._hair(img, g, st)
        if ident.hat:
            col = ident.hat_colour
            _ellipse(img, (cx + fx * 0.2, cy - b * 0.62), (a * 1.3, b * 0.14), 0, _dark(col, 0.8))
            _fill(img, np.concatenate([_arc(cx + fx * 0.15, cy - b * 0.62, a * 1.0, b * 0.62, np.pi, 2 * np.pi)]), col)
        if ident.glasses:
            self._glasses(img, g, st)
        if ident.earrings:
            for side in (-1, 1):
                if side * st.yaw > 0.55:
                    continue
                ex = cx + side * a * (0.98 - 0.25 * max(0.0, side * st.yaw)) + fx * 0.15
                _ellipse(img, (ex, cy + fy * 0.5 + b * 0.22), (a * 0.07, a * 0.07), 0, (240.0, 205.0, 60.0))

        img *= sc.light
        out = cv2.resize(img, (sc.size, sc.size), interpolation=cv2.INTER_AREA)
        out += self.rng.normal(0.0, sc.noise, out.shape).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)

    # -- parts -----------------------------------------------------------------------------------
    def _shade_skin(self, img: np.ndarray, mask: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        """Fill the face with skin lit from the scene's light, darker toward the rim, with soft relief.

        Relief is drawn as signed blobs on one map and blurred once: dark eye sockets, shadow under the
        brows, beside and under the nose and under the lower lip; light nose bridge, forehead and cheeks.
        """
        ident = self.id
        a, b, cx, cy, fx, fy = g["a"], g["b"], g["cx"], g["cy"], g["fx"], g["fy"]
        x0, x1 = int(max(0, cx - a * 1.1)), int(min(self.s, cx + a * 1.1))
        y0, y1 = int(max(0, cy - b * 1.1)), int(min(self.s, cy + b * 1.1))
        if x1 <= x0 or y1 <= y0:
            return
        xs = (self._xx[y0:y1, x0:x1] - cx - fx * 0.5) / a  # (h, w) face-normalised
        ys = (self._yy[y0:y1, x0:x1] - cy) / b
        lx, ly = self.scene.light_dir
        r2 = xs * xs + ys * ys
        base = 1.0 - 0.28 * np.clip(r2, 0, 1.2) ** 1.5 + 0.16 * (lx * xs + ly * ys)  # (h, w)
        relief = np.zeros((y1 - y0, x1 - x0, 2), np.float32)  # ch0 brightness, ch1 rosy
        ox, oy = x0, y0
        ey = cy + ident.eye_y * b + fy
        for side in (-1, 1):
            ex = cx + side * ident.eye_dx * a * (1 - 0.25 * max(0.0, side * st.yaw)) + fx
            _ellipse(relief, (ex - ox, ey - oy - b * 0.03), (a * 0.3, b * 0.16), 0, (-0.55, 0.0))
            _ellipse(relief, (ex - ox + side * a * 0.08, ey - oy + b * 0.32), (a * 0.26, b * 0.12), 0, (0.12, 0.0))
            if ident.rosy_cheeks:
                _ellipse(relief, (ex - ox + side * a * 0.05, ey - oy + b * 0.38), (a * 0.2, b * 0.12), 0, (0.0, 1.0))
            _ellipse(relief, (cx + fx * 1.05 + side * a * 0.16 - ox, cy + fy + b * (ident.nose_len + ident.eye_y - 0.05) - oy),
                     (a * 0.07, b * 0.12), 0, (-0.25, 0.0))
        # Nose bridge and tip: light; below the nose: shadow; forehead: light.
        nose_tip = cy + fy + b * (ident.eye_y + ident.nose_len)
        _fill(relief, np.array([[cx + fx - a * 0.07, ey], [cx + fx + a * 0.07, ey],
                                [cx + fx * 1.1 + a * 0.09, nose_tip - b * 0.04],
                                [cx + fx * 1.1 - a * 0.09, nose_tip - b * 0.04]]) - [ox, oy], (0.25, 0.0))
        _ellipse(relief, (cx + fx * 1.1 - ox, nose_tip + b * 0.08 - oy), (a * 0.16, b * 0.04), 0, (-0.3, 0.0))
        _ellipse(relief, (cx + fx * 0.6 - ox, cy - b * 0.6 - oy), (a * 0.45, b * 0.18), 0, (0.1, 0.0))
        _ellipse(relief, (cx + fx - ox, cy + fy + b * (ident.mouth_y + 0.2) - oy), (a * 0.2, b * 0.05), 0, (-0.2, 0.0))
        relief = cv2.GaussianBlur(relief, (0, 0), a * 0.09)
        shade = np.clip(base + relief[..., 0], 0.2, 1.5)[..., None]  # (h, w, 1)
        col = np.asarray(ident.skin, np.float32) * shade
        if ident.rosy_cheeks:
            rosy = np.clip(relief[..., 1:2], 0, 1)
            col = col * (1 - 0.55 * rosy) + np.asarray((215.0, 85.0, 95.0), np.float32) * shade * 0.55 * rosy
        w = mask[y0:y1, x0:x1, None].astype(np.float32) / 255.0
        img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - w) + col * w

    def _eye_centres(self, g: dict[str, float], st: FaceState) -> list[tuple[float, float, float]]:
        """(x, y, half-width) of the frame-left and frame-right eyes; the far eye foreshortens."""
        ident = self.id
        a, b, cx, cy, fx, fy = g["a"], g["b"], g["cx"], g["cy"], g["fx"], g["fy"]
        out = []
        for side in (-1, 1):
            fore = 1 - 0.35 * max(0.0, side * st.yaw)
            out.append((cx + side * ident.eye_dx * a * (1 - 0.25 * max(0.0, side * st.yaw)) + fx,
                        cy + ident.eye_y * b + fy, ident.eye_w * a * fore))
        return out

    def _eyes(self, img: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        ident = self.id
        lid = _dark(ident.skin, 0.75)
        for (ex, ey, ew), openness in zip(self._eye_centres(g, st), (st.eye_l, st.eye_r), strict=True):
            eh = ew * 0.55 * openness * (1 - 0.3 * st.cheek_raise)
            lash = max(1.0, ew * 0.16)
            if openness < 0.15:  # closed: the lid with a dark lash line curving down
                _ellipse(img, (ex, ey), (ew, ew * 0.35), 0, lid)
                _line(img, _arc(ex, ey, ew, ew * 0.25, 0.05 * np.pi, 0.95 * np.pi), (30.0, 22.0, 20.0), lash)
                continue
            _ellipse(img, (ex, ey), (ew * 1.05, max(eh, 1) * 1.08 + 1), 0, _dark(ident.skin, 0.55))
            _ellipse(img, (ex, ey), (ew, eh), 0, (238.0, 236.0, 230.0))
            ir = ew * 0.48
            ix, iy = ex + st.gaze_x * ew * 0.45, ey + st.gaze_y * eh * 0.4
            clip = np.zeros_like(img[..., 0])
            _ellipse(clip, (ex, ey), (ew, eh), 0, 1.0)
            iris = img.copy()
            _ellipse(iris, (ix, iy), (ir, ir), 0, ident.iris)
            _ellipse(iris, (ix, iy), (ir * 0.5, ir * 0.5), 0, (12.0, 10.0, 10.0))
            _ellipse(iris, (ix + ir * 0.3, iy - ir * 0.3), (ir * 0.18, ir * 0.18), 0, (250.0, 250.0, 250.0))
            sel = clip > 0
            img[sel] = iris[sel] * clip[sel, None] + img[sel] * (1 - clip[sel, None])
            _line(img, _arc(ex, ey, ew * 1.02, eh * 1.02, 1.05 * np.pi, 1.95 * np.pi), (25.0, 18.0, 16.0), lash * 1.3)

    def _brows(self, img: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        ident = self.id
        b = g["b"]
        col = _dark(ident.hair, 0.7) if not ident.bald else ident.hair
        thick = b * (0.07 if ident.bushy_eyebrows else 0.04)
        for (ex, ey, ew), side in zip(self._eye_centres(g, st), (-1, 1), strict=True):
            by = ey - ident.brow_gap * b - st.brow_raise * 0.12 * b
            inner_x = ex - side * ew * (1.05 - 0.3 * st.brow_squeeze)
            outer_x = ex + side * ew * 1.2
            inner_y = by - st.brow_tilt * 0.11 * b + st.brow_squeeze * 0.02 * b
            mid = (ex, by - 0.035 * b - 0.02 * b * max(st.brow_raise, 0))
            pts = np.array([[inner_x, inner_y], mid, [outer_x, by + 0.02 * b]])
            _line(img, pts, col, thick)
            if ident.bushy_eyebrows:
                _line(img, pts + [0, thick * 0.35], col, thick * 0.8)

    def _nose(self, img: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        ident = self.id
        a, b, cx, cy, fx, fy = g["a"], g["b"], g["cx"], g["cy"], g["fx"], g["fy"]
        tip = cy + fy + b * (ident.eye_y + ident.nose_len)
        nx = cx + fx * 1.15
        dark = _dark(ident.skin, 0.35)
        for side in (-1, 1):
            _ellipse(img, (nx + side * a * 0.09, tip + b * 0.035), (a * 0.05, b * 0.022), 0, dark)
        _line(img, _arc(nx, tip - b * 0.02, a * 0.14, b * 0.05, 0.15 * np.pi, 0.85 * np.pi), _dark(ident.skin, 0.7), max(1, a * 0.025))
        if st.nose_wrinkle > 0:
            ey = cy + ident.eye_y * b + fy
            for k in range(3):
                yk = ey + b * (0.06 + 0.04 * k)
                _line(img, np.array([[nx - a * 0.08, yk], [nx, yk - b * 0.012], [nx + a * 0.08, yk]]),
                      _dark(ident.skin, 1 - 0.35 * st.nose_wrinkle), max(1, a * 0.02))

    def _mouth(self, img: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        ident = self.id
        a, b, cx, cy, fx, fy = g["a"], g["b"], g["cx"], g["cy"], g["fx"], g["fy"]
        my = cy + fy * 1.1 + ident.mouth_y * b
        mx = cx + fx * 1.1
        hw = ident.mouth_w * a * st.mouth_width * (1 - 0.4 * st.pucker) * (1 + 0.12 * max(st.mouth_curve, 0))
        corner_y = my - st.mouth_curve * 0.16 * b
        open_h = st.mouth_open * 0.24 * b
        lip_t = b * (0.045 + 0.035 * st.pucker)
        raise_r = st.lip_raise * 0.05 * b
        n = 9
        t = np.linspace(-1, 1, n)
        # Lip line shape: corners at corner_y, middle at my (a smile bends the middle down relative to corners).
        mid_line = corner_y + (1 - t * t) * (my - corner_y)  # (n,)
        xs = mx + t * hw
        up_inner = mid_line - (1 - t * t) * open_h * 0.35 - np.clip(t, 0, 1) * raise_r
        lo_inner = mid_line + (1 - t * t) * open_h * 0.65
        upper_outer = up_inner - lip_t * (1 - 0.5 * t * t) - lip_t * 0.3 * np.cos(t * np.pi * 1.5) ** 2
        lower_outer = lo_inner + lip_t * 1.3 * (1 - 0.6 * t * t)
        lip = ident.lip
        upper = np.concatenate([np.stack([xs, upper_outer], 1), np.stack([xs[::-1], up_inner[::-1]], 1)])
        lower = np.concatenate([np.stack([xs, lo_inner], 1), np.stack([xs[::-1], lower_outer[::-1]], 1)])
        if open_h > 0.5:
            inner = np.concatenate([np.stack([xs, up_inner], 1), np.stack([xs[::-1], lo_inner[::-1]], 1)])
            _fill(img, inner, (45.0, 15.0, 20.0))
            if st.teeth:
                teeth = np.concatenate([np.stack([xs[1:-1], up_inner[1:-1]], 1),
                                        np.stack([xs[-2:0:-1], up_inner[-2:0:-1] + open_h * 0.3], 1)])
                _fill(img, teeth, (235.0, 232.0, 220.0))
        _fill(img, upper, _dark(lip, 0.85))
        _fill(img, lower, lip)
        _line(img, np.stack([xs, (up_inner + lo_inner) / 2 if open_h <= 0.5 else up_inner], 1), (40.0, 15.0, 18.0), max(1, b * 0.035))

    def _facial_hair(self, img: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        ident = self.id
        if ident.beard == "none":
            return
        a, b, cx, cy, fx, fy = g["a"], g["b"], g["cx"], g["cy"], g["fx"], g["fy"]
        col = _dark(ident.hair, 0.75) if not ident.bald else (60.0, 40.0, 30.0)  # beards read darker than scalp hair
        my = cy + fy * 1.1 + ident.mouth_y * b
        mx = cx + fx * 1.1
        jaw_drop = st.mouth_open * 0.2 * b
        if ident.beard == "stubble":
            assert self.stubble is not None
            pts = self.stubble * [a * 0.7, b * 0.3] + [cx + fx * 0.8, cy + b * 0.6 + jaw_drop * 0.5]
            over = img.copy()
            for x, y in pts:
                _ellipse(over, (x, y), (a * 0.014, a * 0.014), 0, (35.0, 30.0, 30.0))
            img[:] = img * 0.65 + over * 0.35
            return
        if ident.beard == "full":
            outer = _arc(cx + fx * 0.5, cy + jaw_drop * 0.5, a * 0.98, b * 1.02, 0.02 * np.pi, 0.98 * np.pi, 16)
            inner = _arc(mx, my - b * 0.05, ident.mouth_w * a * 1.25, b * 0.28 + jaw_drop, 0.98 * np.pi, 0.02 * np.pi, 10)
            _fill(img, np.concatenate([outer, inner]), col)
        if ident.beard in ("goatee", "goatee_mustache"):
            _fill(img, _arc(mx, my + b * 0.1 + jaw_drop, a * 0.22, b * 0.36, 0, np.pi, 12), col)
        if ident.beard in ("mustache", "goatee_mustache", "full"):
            hw = ident.mouth_w * a * 1.05
            top = np.array([[mx - hw, my + b * 0.02], [mx - hw * 0.5, my - b * 0.14], [mx, my - b * 0.12],
                            [mx + hw * 0.5, my - b * 0.14], [mx + hw, my + b * 0.02]])
            bottom = np.array([[mx + hw * 0.8, my - b * 0.03], [mx, my - b * 0.06], [mx - hw * 0.8, my - b * 0.03]])
            _fill(img, np.concatenate([top, bottom]), col)

    def _hair(self, img: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        ident = self.id
        a, b, cx, cy, fx = g["a"], g["b"], g["cx"], g["cy"], g["fx"]
        hcx = cx + fx * 0.15
        outer = _arc(hcx, cy - b * 0.05, a * 1.1, b * 1.08, np.pi * 0.98, np.pi * 2.02, 48)
        if ident.wavy_hair:  # waves along the crown's outline, about 1.5 px deep at 64 px
            outer = _wavy(outer, b * 0.07, 6)
        line_y = cy - b * (0.47 if ident.bangs else 0.6)
        # Hairline: from the right temple across the forehead back to the left temple.
        xs = np.linspace(hcx + a * 0.95, hcx - a * 0.95, 15)
        ys = line_y - np.cos(np.linspace(-1, 1, 15) * np.pi / 2) * b * (0.02 if ident.bangs else 0.12)
        ys = ys + np.where(np.arange(15) % 2 == 0, 0.0, b * 0.035 if ident.bangs else 0.0)
        ys[0] = ys[-1] = cy - b * 0.2
        hairline = np.stack([xs, ys], 1)
        _fill(img, np.concatenate([outer, hairline]), ident.hair)
        # Strands: a few darker curves so the hair reads as hair, not a cap; wavy hair's strands snake.
        shade = _dark(ident.hair, 0.8 if ident.hair_colour != "black_hair" else 1.6)
        for k in range(-2, 3):
            strand = _arc(hcx + k * a * 0.25, cy - b * 0.2, a * 0.5, b * 0.8, 1.25 * np.pi, 1.6 * np.pi, 12)
            if ident.wavy_hair:
                _line(img, _wavy(strand, a * 0.07, 1.5), _dark(shade, 0.85), max(1, a * 0.04))
            else:
                _line(img, strand, shade, max(1, a * 0.02))

    def _glasses(self, img: np.ndarray, g: dict[str, float], st: FaceState) -> None:
        ident = self.id
        eyes = self._eye_centres(g, st)
        sun = ident.glasses == "sunglasses"
        rim = (20.0, 20.0, 22.0)
        thick = max(1, g["a"] * 0.035)
        for ex, ey, ew in eyes:
            r = (ew * 1.45, ew * 1.0)
            if sun:
                _ellipse(img, (ex, ey + ew * 0.1), r, 0, (18.0, 18.0, 24.0))
                _ellipse(img, (ex - ew * 0.5, ey - ew * 0.3), (ew * 0.3, ew * 0.15), -20, (70.0, 70.0, 80.0))
            _ellipse(img, (ex, ey + ew * 0.1), r, 0, rim, int(round(thick)))
        (lx, ly, lw), (rx, ry, rw) = eyes
        _line(img, np.array([[lx + lw * 1.45, ly], [(lx + rx) / 2, ly - lw * 0.25], [rx - rw * 1.45, ry]]), rim, thick)
