"""Training throughput of the stage trainer with and without its two caches, on the demo's model.

    python benchmarks/bench_train_cache.py                 # 240 FaceSynth clips, 120 steps per run
    python benchmarks/bench_train_cache.py --clips 60 --steps 30

For stage 2 (the demo's schedule: the facial encoder frozen, the general one training) and stage 3 (both
towers frozen), runs the same steps three times from the same checkpoint: no cache; decoded frames kept
(``data.cache_videos``); frames and the frozen towers' states kept (``cache_frozen_towers`` as well).
Prints samples/s (the mean over the logged windows, so model loading and saving are left out) and the
ratio to the uncached run. All three runs train the same weights; the gain grows with how often clips come
back (here each clip has about seven QA pairs).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

FROZEN = {2: "facial encoder frozen", 3: "both towers frozen"}
VARIANTS = {"no cache": (False, False), "frames": (True, False), "frames + frozen towers": (True, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=240, help="FaceSynth clips (80% train)")
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps per run")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    import torch

    from favchat.config import load_config
    from favchat.data.synth import SynthConfig, generate
    from favchat.demo import load_recipe
    from favchat.train.config import TrainConfig
    from favchat.train.trainer import build_model, train

    demo = load_recipe().stages[2]  # the packaged demo's model and freezing schedule
    schedule = {k: list(v) for k, v in demo.schedule.items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = generate(SynthConfig(seed=0, min_frames=16, max_frames=24, min_size=64, max_size=80), args.clips,
                            tmp / "data", workers=2, progress=False)
        torch.manual_seed(0)
        model, processor = build_model(None, demo.model)
        model.save_pretrained(tmp / "init")
        processor.save_pretrained(tmp / "init")
        print(f"{args.clips} clips, {args.steps} steps of {args.batch} per run, {torch.get_num_threads()} threads "
              f"(os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
        for stage in (2, 3):
            base = None
            for name, (videos, towers) in VARIANTS.items():
                out = tmp / f"stage{stage}-{name.replace(' ', '')}"
                cfg = load_config(TrainConfig, None, {
                    "stage": stage, "output_dir": str(out), "init_from": str(tmp / "init"), "schedule": schedule,
                    "data": {"train_manifest": str(manifest), "cache_videos": videos},
                    "cache_frozen_towers": towers, "tensorboard": False, "log_every": 10, "save_every": args.steps,
                    "optim": {"lr": 1e-3, "max_steps": args.steps, "batch_size": args.batch},
                })
                train(cfg)
                with open(out / "metrics.csv") as f:
                    rates = [float(r["samples_per_s"]) for r in csv.DictReader(f)]
                rate = sum(rates) / len(rates)
                base = base or rate
                print(f"stage {stage} ({FROZEN[stage]})  {name:<24} {rate:7.1f} samples/s  x{rate / base:.2f}")


if __name__ == "__main__":
    main()
