"""The states of the towers that do not train in a stage, computed once per clip and kept in memory.

A frozen tower is in eval mode (``VisionTower.train``) and maps a clip's frames (sampled the same way
every time) to the same states, so every later sample of that clip (its other QA pairs, the next epoch)
reuses them and only the towers that train run at each step. Training is the same with or without the
cache (``tests/test_train_stages.py`` checks equal weights); what changes is the time per step. Given the
stores of ``VideoCache.tower_states``, the states outlive the stage: a later stage of the same process whose
frozen tower has the same weights (the demo's facial encoder in stages 1-3) reads them.

    cache = FrozenTowerCache(model)              # after the stage's freezing (the unwrapped model)
    feats = cache.lookup(batch["clip_ids"], inputs)  # pops the cached streams' pixel values
    out = model(**inputs, video_features=feats)  # the other towers run from their pixel values

Memory: for each clip and frozen tower, the states of the blocks FaVChat reads, on the training device:
about 0.14 MB per clip for EfficientNet-Lite0 at 64 px with 8 frames (the demo's facial encoder), but
tens of MB per clip for a Swin-B at 224 px with 16 frames. Enable it (``cache_frozen_towers``) where
clips repeat and the states fit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from favchat.model.modeling import VideoFeatures

STREAMS = ("general", "face")


class FrozenTowerCache:
    def __init__(self, model, stores: Callable[[str, torch.nn.Module], dict] | None = None) -> None:
        """``stores(stream, tower)``: where a frozen tower's states go (``VideoCache.tower_states``: shared with
        the other runs of the process); None: this cache's own."""
        self.model = model
        towers = {"general": model.general_encoder, "face": model.face_encoder}
        # The streams whose tower has no trainable weight in this stage; the others run every step.
        self.streams = [s for s in STREAMS
                        if towers[s] is not None and not any(p.requires_grad for p in towers[s].parameters())]
        self._states: dict[str, dict[str, dict[int, torch.Tensor]]] = {
            s: {} if stores is None else stores(s, towers[s]) for s in self.streams}
        self.hits = self.misses = 0

    def __len__(self) -> int:
        """Clips held."""
        return len(self._states[self.streams[0]]) if self.streams else 0

    def lookup(self, clip_ids: list[str], inputs: dict[str, torch.Tensor]) -> VideoFeatures | None:
        """The cached streams' states for a batch (clips not seen before are encoded and stored). The cached
        streams' ``{stream}_pixel_values`` are removed from ``inputs``; None when no tower is frozen."""
        if not self.streams:
            return None
        out: dict[str, dict[int, torch.Tensor]] = {}
        for s in self.streams:
            store = self._states[s]
            pixels = inputs.pop(f"{s}_pixel_values")
            new = list(dict.fromkeys(c for c in clip_ids if c not in store))  # a clip may come twice in a batch
            if s == self.streams[0]:  # counted once per clip
                self.misses += len(new)
                self.hits += len(clip_ids) - len(new)
            if new:
                with torch.no_grad():
                    states = self.model.encode_stream(s, pixels[[clip_ids.index(c) for c in new]])
                for j, c in enumerate(new):
                    store[c] = {k: v[j] for k, v in states.items()}
            out[s] = {k: torch.stack([store[c][k] for c in clip_ids]) for k in store[clip_ids[0]]}
        return VideoFeatures(out.get("general"), out.get("face"))
