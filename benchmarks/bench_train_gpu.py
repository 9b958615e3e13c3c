"""Stages 1, 2 and 3 of the stage trainer on one GPU, at a larger scale than the demo: throughput and peak
GPU memory per stage, under bf16 mixed precision.

    python benchmarks/bench_train_gpu.py                      # the "large" model, 16 steps per stage
    python benchmarks/bench_train_gpu.py --scale demo --precision no --steps 40

``--scale large``: the paper preset's towers (a UMT-L-size video ViT over 8 general frames and Swin-B over
16 facial frames, both at 224 px) and prompt-query widths (d = 768, 32 queries), with a Qwen2.5-0.5B-shape
LLM (24 layers of width 896) on the tiny preset's tokenizer; every weight is random (none of these ship in a
wheel here), which costs nothing in speed or memory. ``--scale demo``: the demo's model. Each stage starts
from the previous stage's final checkpoint, trains the components docs/design.md §2 names (LoRA on the LLM in
stage 3), on FaceSynth clips. Per stage the script prints samples/s and tokens/s (mean of the logged windows
after the first, which holds the warm-up), peak GPU memory, the loss of the first and last window, and
checks that every parameter outside the stage's schedule is bit-identical to the checkpoint it started from.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

# Qwen2.5-0.5B's shape (its vocabulary aside: the tiny preset's tokenizer goes with the model).
QWEN25_05B = {"model_type": "qwen2", "vocab_size": 1024, "hidden_size": 896, "intermediate_size": 4864,
              "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
              "max_position_embeddings": 2048, "tie_word_embeddings": True, "pad_token_id": 0,
              "eos_token_id": 2, "bos_token_id": None}


def large_overrides() -> dict:
    from favchat.model.presets import SWIN_B, UMT_L

    return {"general_vision_config": UMT_L, "face_vision_config": SWIN_B, "text_config": QWEN25_05B,
            "pq_hidden_size": 768, "pq_num_heads": 12, "pq_intermediate_size": 3072, "num_query_tokens": 32,
            "adapter_hidden_size": 256, "low_level_blocks": [1, 2, 3, 4], "general_block": -2,
            "num_general_frames": 8, "num_face_frames": 16, "image_size": 224, "face_image_size": 224,
            "system_prompt": ""}


def _weights(folder: Path) -> dict:
    """A checkpoint's tensors by name, over all its safetensors shards."""
    from safetensors.torch import load_file

    return {k: v for shard in sorted(folder.glob("*.safetensors")) for k, v in load_file(shard).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=("large", "demo"), default="large")
    ap.add_argument("--steps", type=int, default=16, help="optimizer steps per stage")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--clips", type=int, default=48, help="FaceSynth clips (80%% train)")
    ap.add_argument("--precision", choices=("bf16", "fp16", "no"), default="bf16")
    ap.add_argument("--activation-checkpointing", action="store_true")
    args = ap.parse_args()

    import torch

    from favchat.config import load_config, to_dict
    from favchat.data.synth.generate import SynthConfig, generate
    from favchat.demo import load_recipe
    from favchat.train.config import TrainConfig
    from favchat.train.trainer import train

    cuda = torch.cuda.is_available()
    model = ({"preset": "tiny", "overrides": large_overrides()} if args.scale == "large"
             else to_dict(load_recipe().stages[2].model))
    log_every = max(1, args.steps // 4)
    device = torch.cuda.get_device_name() if cuda else "CPU (no GPU memory figures)"
    print(f"{device}, torch {torch.__version__}; scale {args.scale}, precision {args.precision}, gradient "
          f"checkpointing {args.activation_checkpointing}, {args.steps} steps of {args.batch} per stage")
    print(f"{'stage':>5} {'trainable':>11} {'samples/s':>10} {'tokens/s':>9} {'peak GPU':>9} "
          f"{'loss first -> last':>19}  frozen unchanged")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = SynthConfig(seed=0, min_frames=16, max_frames=24, min_size=64, max_size=80)
        manifest = generate(clips, args.clips, tmp / "data", workers=4, progress=False)
        init = before = None
        for stage in (1, 2, 3):
            cfg = load_config(TrainConfig, None, {
                "stage": stage, "output_dir": str(tmp / f"stage{stage}"), "init_from": init, "model": model,
                "data": {"train_manifest": str(manifest), "cache_videos": True},
                "precision": args.precision, "activation_checkpointing": args.activation_checkpointing,
                "tensorboard": False, "log_every": log_every, "save_every": args.steps, "keep_checkpoints": 1,
                "optim": {"lr": 1e-4, "max_steps": args.steps, "batch_size": args.batch},
            })
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            result = train(cfg)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            with open(Path(cfg.output_dir) / "metrics.csv") as f:
                rows = list(csv.DictReader(f))
            timed = rows[1:] or rows
            rate = sum(float(r["samples_per_s"]) for r in timed) / len(timed)
            tok = sum(float(r["tokens_per_s"]) for r in timed) / len(timed)
            after = _weights(result.final_dir)
            unchanged = "-"
            if before is not None:  # the previous stage's final weights, this stage's start
                frozen = [k for k in before if k.split(".")[0] not in cfg.trainable and k in after]
                changed = [k for k in frozen if not torch.equal(before[k], after[k])]
                unchanged = f"{len(frozen) - len(changed)}/{len(frozen)}"
                if changed:
                    unchanged += f" (changed: {changed[:3]})"
            n_train = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
            print(f"{stage:>5} {n_train / 1e6:>10.1f}M {rate:>10.1f} {tok:>9.0f} {peak:>8.2f}G "
                  f"{float(rows[0]['loss']):>9.3f} -> {float(rows[-1]['loss']):.3f}  {unchanged}", flush=True)
            init, before = str(result.final_dir), after
            del result
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
