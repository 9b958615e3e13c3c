"""DE-GRPO on 10% of the RL pool against GRPO on all of it, on FaceSynth with the tiny preset.

    python benchmarks/bench_de_grpo.py --threads 1          # default scale (2-core CPU: ~10 minutes)
    python benchmarks/bench_de_grpo.py --smoke              # smallest scale, a minute or two

Steps: generate FaceSynth clips; a short supervised warm-up of the tiny FaVChat (a plain loop on the
model's answer loss over the train split's QA pairs, standing in for stages 1–3); then, from that same
warm-up model, DE-GRPO on ``--de-fraction`` of the train-split RL pool and GRPO on the whole pool, with
the same number of optimizer steps, batch and group size, for ``--rl-seeds`` seeds each. Every ``--eval-every`` steps both are scored on
held-out (val + test identities) samples with greedy decoding and the facial reward at uniform λ.

Prints a table (held-out reward per step for both, time per step, DE-GRPO's time over GRPO's) and writes
``OUT/de_grpo_vs_grpo.png`` and ``OUT/results.json``. Time per step is the median over steps with every
video decoded beforehand, so it measures rollouts + update (+ DE-GRPO's probe gradients and critic).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from favchat.data.manifest import read_manifest
from favchat.data.synth.generate import SynthConfig, generate
from favchat.model.configuration import FaVChatConfig
from favchat.model.modeling import FaVChatForConditionalGeneration
from favchat.model.processing import FaVChatProcessor
from favchat.rl.config import RLConfig
from favchat.rl.data import samples_from_clips
from favchat.rl.plots import plot_comparison
from favchat.rl.trainer import RLTrainer


def warm_up(model, processor, clips, steps: int, batch: int, lr: float, device, seed: int) -> list[float]:
    """Supervised answer loss over the clips' QA pairs (all parameters train): a few hundred steps."""
    pairs = [(c, qa) for c in clips for qa in c.qa]
    rng = random.Random(seed)
    videos = {c.id: processor.load_video(c.video_path, c.frame_range) for c in tqdm(clips, desc="decode (SFT)")}
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="SFT warm-up"):
        chunk = rng.sample(pairs, min(batch, len(pairs)))
        inputs = processor([videos[c.id] for c, _ in chunk], [qa.question for _, qa in chunk],
                           [qa.answer for _, qa in chunk])
        loss = model(**{k: v.to(device) for k, v in inputs.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def run_rl(name: str, model, processor, pool, heldout, args, out: Path, seed: int, **kw) -> dict:
    cfg = RLConfig(output_dir=str(out / f"{name}-seed{seed}"), num_generations=args.g, batch_size=args.batch,
                   max_new_tokens=args.max_new_tokens, learning_rate=args.rl_lr, num_rounds=10_000,
                   max_steps=args.steps, eval_every=args.eval_every, eval_samples=len(heldout), save_every=0,
                   seed=seed, **kw)
    torch.manual_seed(seed)
    tr = RLTrainer(cfg, model=model, processor=processor, train_samples=pool, eval_samples=heldout)
    tr.preload_videos()
    start = tr.evaluate()
    res = tr.train()
    rows = [r for r in res["history"] if "reward" in r]
    evals = [(0, start)] + [(int(r["step"]), r["heldout_reward"]) for r in res["history"] if "heldout_reward" in r
                            and "reward" in r]
    return {"pool": len(tr.pool), "evals": evals, "time_step": statistics.median(r["time_step"] for r in rows),
            "train_reward": [r["reward"] for r in rows], "removed": rows[-1]["removed"] if rows else 0,
            "decayed": rows[-1]["decayed"] if rows else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_de_grpo")
    ap.add_argument("--clips", type=int, default=96, help="FaceSynth clips to generate")
    ap.add_argument("--sft-steps", type=int, default=800)
    ap.add_argument("--sft-lr", type=float, default=3e-3)
    ap.add_argument("--steps", type=int, default=60, help="RL optimizer steps for each algorithm")
    ap.add_argument("--batch", type=int, default=4, help="samples per RL step")
    ap.add_argument("--g", type=int, default=4, help="responses per sample")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--rl-lr", type=float, default=5e-5)
    ap.add_argument("--de-fraction", type=float, default=0.1, help="DE-GRPO's share of the RL pool")
    ap.add_argument("--grpo-reward", choices=("facial", "format_length"), default="facial",
                    help="GRPO's training reward (format_length: the paper's 'w. GRPO' ablation)")
    ap.add_argument("--eval-every", type=int, default=6)
    ap.add_argument("--heldout", type=int, default=64, help="held-out samples scored per evaluation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rl-seeds", type=int, default=3, help="RL runs per algorithm (seeds seed, seed+1, ...)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0: torch's default; 1 is much faster on a crowded machine)")
    ap.add_argument("--smoke", action="store_true", help="smallest scale: checks the script end to end")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.clips, args.sft_steps, args.steps, args.eval_every, args.heldout, args.rl_seeds = 24, 20, 4, 2, 4, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    manifest = generate(SynthConfig(seed=args.seed, min_size=48, max_size=64, min_frames=16, max_frames=32),
                        args.clips, out / "facesynth")
    clips = read_manifest(manifest)
    train_clips = [c for c in clips if c.split == "train"]
    held_clips = [c for c in clips if c.split != "train"]
    pool = samples_from_clips(train_clips)
    heldout = random.Random(args.seed).sample(samples_from_clips(held_clips),
                                              min(args.heldout, len(samples_from_clips(held_clips))))

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = FaVChatConfig.from_preset("tiny")
    processor = FaVChatProcessor.from_config(config)
    base = FaVChatForConditionalGeneration(config).to(device)
    t0 = time.perf_counter()
    losses = warm_up(base, processor, train_clips, args.sft_steps, 8, args.sft_lr, device, args.seed)
    print(f"SFT warm-up: {args.sft_steps} steps in {time.perf_counter() - t0:.0f} s, loss {losses[0]:.3f} -> "
          f"{statistics.mean(losses[-10:]):.3f}")

    runs: dict[str, list[dict]] = {"DE-GRPO": [], "GRPO": []}
    for k in range(args.rl_seeds):  # every RL run starts from the same warm-up model
        seed = args.seed + k
        runs["DE-GRPO"].append(run_rl("de_grpo", copy.deepcopy(base), processor, pool, heldout, args, out, seed,
                                      algorithm="de_grpo", pool_fraction=args.de_fraction))
        runs["GRPO"].append(run_rl("grpo", copy.deepcopy(base), processor, pool, heldout, args, out, seed,
                                   algorithm="grpo", reward=args.grpo_reward))

    def mean_curve(rs: list[dict]) -> tuple[list[int], list[float]]:
        steps = [s for s, _ in rs[0]["evals"]]
        return steps, [statistics.mean(dict(r["evals"])[s] for r in rs) for s in steps]

    curves = {name: mean_curve(rs) for name, rs in runs.items()}
    de_pool, gr_pool = runs["DE-GRPO"][0]["pool"], runs["GRPO"][0]["pool"]
    print(f"\nFaceSynth, tiny preset, {device.type}; RL pool {len(pool)} samples; held-out {len(heldout)} samples; "
          f"{args.steps} steps of {args.batch} samples x G={args.g}; mean over {args.rl_seeds} RL seed(s)")
    print(f"{'step':>6} | {f'DE-GRPO ({de_pool} samples)':>24} | {f'GRPO ({gr_pool} samples)':>22}")
    for step, a, b in zip(curves["DE-GRPO"][0], curves["DE-GRPO"][1], curves["GRPO"][1], strict=True):
        print(f"{step:>6} | {a:>24.4f} | {b:>22.4f}")
    t_de = statistics.median(r["time_step"] for r in runs["DE-GRPO"])
    t_gr = statistics.median(r["time_step"] for r in runs["GRPO"])
    ratio = t_de / t_gr
    print(f"median time/step: DE-GRPO {t_de:.3f} s, GRPO {t_gr:.3f} s, ratio {ratio:.2f}x (goal <= 1.3x)")
    for r in runs["DE-GRPO"]:
        print(f"DE-GRPO removed {r['removed']:.0f} and decayed {r['decayed']:.0f} of its {r['pool']} samples")
    finals = {name: [r["evals"][-1][1] for r in rs] for name, rs in runs.items()}
    for name, vals in finals.items():
        spread = f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else ""
        print(f"final held-out reward {name}: {statistics.mean(vals):.4f}{spread}  (per seed {[round(v, 4) for v in vals]})")
    m_de, m_gr = statistics.mean(finals["DE-GRPO"]), statistics.mean(finals["GRPO"])
    print("higher final mean: " + ("DE-GRPO" if m_de > m_gr else "GRPO" if m_gr > m_de else "tie"))

    png = plot_comparison({f"DE-GRPO ({de_pool} samples)": curves["DE-GRPO"], f"GRPO ({gr_pool} samples)": curves["GRPO"]},
                          out / "de_grpo_vs_grpo.png")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "device": device.type, "runs": runs,
                                                  "time_ratio": ratio, "sft_losses": losses}, indent=1))
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
