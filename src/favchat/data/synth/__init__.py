"""FaceSynth: procedural facial videos with exact ground truth over 42 taxonomy labels (docs/design.md §6).

    from favchat.data.synth import SynthConfig, generate, render_clip
    generate(SynthConfig(seed=0), n=100, out="data/facesynth", workers=2)   # videos/ + manifest.jsonl
    r = render_clip(SynthConfig(seed=0), 7)      # r.clip (manifest record), r.frames (T, H, W, 3) uint8

See ``docs/facesynth.md`` for what is rendered, how each label maps to pixels, and the limits.
"""

from favchat.data.synth.generate import Rendered, SynthConfig, generate, render_clip, split_of_identity
from favchat.data.synth.text import RENDERED

RENDERED_LABELS: tuple[str, ...] = tuple(n for names in RENDERED.values() for n in names)

__all__ = ["RENDERED", "RENDERED_LABELS", "Rendered", "SynthConfig", "generate", "render_clip", "split_of_identity"]
