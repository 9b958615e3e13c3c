"""The demo's facial encoder (EfficientNet-Lite0 at 64 px) on frames in the two memory layouts.

    python benchmarks/bench_face_tower.py [--batch 32] [--frames 8] [--repeats 3] [--threads 2]

``EfficientNetLiteTower`` hands its frames to the convolutions channels-last; this measures why, in one run:
a training step (forward and backward of every block the low level reads, as the encoder's pretraining
does) and a frozen forward (what the trainers' frozen-tower cache and the evaluation run), with the frames
contiguous (NCHW) and channels-last (NHWC). Prints the best of ``--repeats`` after a warm-up, in seconds,
the ratio, and the largest difference between the two layouts' states.
"""

from __future__ import annotations

import argparse
import time

import torch


def states(tower, frames: torch.Tensor) -> list[torch.Tensor]:
    """The tower's stem and MBConv blocks on (N, 3, H, W) frames as given: what ``_states`` runs, without the
    layout it chooses."""
    m = tower.model
    x = m._swish(m._bn0(m._conv_stem(frames)))
    out = []
    for i, block in enumerate(m._blocks):
        x = block(x)
        if i in tower._stage_ends:
            out.append(x)
    return out


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="clips (the pretraining's batch)")
    ap.add_argument("--frames", type=int, default=8, help="face frames per clip")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from favchat.demo import load_recipe
    from favchat.model.configuration import FaVChatConfig
    from favchat.model.modeling import FaVChatForConditionalGeneration

    section = load_recipe().stages[2].model  # the packaged demo's model
    cfg = FaVChatConfig.from_preset(section.preset, **section.overrides)
    tower = FaVChatForConditionalGeneration(cfg).face_encoder.to(args.device).train()
    size = cfg.face_vision_config.image_size
    frames = torch.randn(args.batch * args.frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    frames = frames.to(args.device)
    sync = torch.cuda.synchronize if frames.is_cuda else (lambda: None)
    layouts = {"contiguous": frames.contiguous(), "channels-last": frames.contiguous(memory_format=torch.channels_last)}

    def train_step(x):
        def run():
            tower.zero_grad(set_to_none=True)
            sum(s.mean() for s in states(tower, x)).backward()
            sync()
        return run

    def frozen(x):
        def run():
            with torch.no_grad():
                states(tower, x)
            sync()
        return run

    print(f"{args.batch} clips x {args.frames} frames at {size} px, {args.device}, {torch.get_num_threads()} threads")
    for what, make in (("training step", train_step), ("frozen forward", frozen)):
        secs = {name: best(make(x), args.repeats) for name, x in layouts.items()}
        print(f"{what:15s} contiguous {secs['contiguous']:.3f} s, channels-last {secs['channels-last']:.3f} s: "
              f"x{secs['contiguous'] / secs['channels-last']:.2f}")
    tower.eval()
    with torch.no_grad():
        diff = max((a - b).abs().max().item() for a, b in zip(*(states(tower, x) for x in layouts.values()), strict=True))
    print(f"largest difference between the layouts' states (eval mode): {diff:.2e}")


if __name__ == "__main__":
    main()
