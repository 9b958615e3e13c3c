"""The demo's facial encoder (EfficientNet-Lite0 at 64 px) with its "SAME" padding as the package writes it
and folded into the convolutions (``favchat.model.vision.fold_same_padding``, what the tower uses).

    python benchmarks/bench_face_tower.py [--batch 32] [--frames 8] [--repeats 3] [--threads 2]

Times a training step (forward and backward through the blocks the demo's low level reads, as the encoder's
pretraining runs them) and a frozen forward (what the trainers' frozen-tower cache and the evaluation run) of
both on the same weights and the same channels-last frames (the layout the processor gives), alternating
the two so that a machine's load falls on both alike. Prints the best of ``--repeats`` after a warm-up, the
ratio, and the largest difference between the two's outputs (zero: the padding is the same zeros).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="clips (the pretraining's batch)")
    ap.add_argument("--frames", type=int, default=8, help="face frames per clip")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from favchat.demo import load_recipe
    from favchat.model.configuration import FaVChatConfig
    from favchat.model.modeling import FaVChatForConditionalGeneration
    from favchat.model.vision import fold_same_padding

    section = load_recipe().stages[2].model  # the packaged demo's model
    cfg = FaVChatConfig.from_preset(section.preset, **section.overrides)
    folded = FaVChatForConditionalGeneration(cfg).face_encoder  # the tower as built: its padding folded
    padded = copy.deepcopy(folded)  # the package's padding put back, on the same weights
    for conv in padded.model.modules():
        if isinstance(conv, torch.nn.Conv2d) and conv.padding != (0, 0):
            top, left = conv.padding
            conv.padding, conv.static_padding = (0, 0), torch.nn.ZeroPad2d((left, left, top, top))
    assert fold_same_padding(copy.deepcopy(padded.model)) > 0
    size = cfg.face_vision_config.image_size
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(args.batch, args.frames, size, size, 3, generator=g).permute(0, 1, 4, 2, 3)

    def states(tower) -> list[torch.Tensor]:  # the tower's own forward: every block the low level reads
        return list(tower(frames).values())

    def train_step(tower):
        tower.requires_grad_(True).train().zero_grad(set_to_none=True)
        sum(x.mean() for x in states(tower)).backward()

    def frozen(tower):
        with torch.no_grad():
            states(tower.requires_grad_(False).eval())

    print(f"{args.batch} clips x {args.frames} frames at {size} px, {torch.get_num_threads()} threads")
    for what, run in (("training step", train_step), ("frozen forward", frozen)):
        best = {"padded": float("inf"), "folded": float("inf")}
        for model in (padded, folded):
            run(model)  # warm-up
        for _ in range(args.repeats):
            for name, model in (("padded", padded), ("folded", folded)):
                t = time.perf_counter()
                run(model)
                best[name] = min(best[name], time.perf_counter() - t)
        print(f"{what:15s} padded {best['padded']:.3f} s, folded {best['folded']:.3f} s: "
              f"x{best['padded'] / best['folded']:.2f}")
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(states(padded), states(folded), strict=True))
    print(f"largest difference between the two's outputs: {diff:.1e}")


if __name__ == "__main__":
    main()
