"""The paper's Table 4 on FaceSynth: every RL row from the demo's stage-3 checkpoint, on one pool.

    favchat demo --out runs/demo                            # once: the clips and the stage-3 checkpoint
    python benchmarks/bench_de_grpo.py --demo runs/demo     # the default run (see the note for its time)
    python benchmarks/bench_de_grpo.py --demo runs/demo --smoke    # the script end to end, a few minutes

Rows: the base settings of ``configs/rl/facesynth.yaml`` with each row's switches from ``configs/rl/table4/``:
w.o. RL (the stage-3 model), GRPO (format + length reward), GRPO on all data, w.o. RD (DE-GRPO without the
recurrent data mechanism), DE-GRPO.

The same pool: ``--pool`` description questions of the demo's train clips (a seeded draw) are "all data"; the
rows on the paper's 10K share (``pool_fraction`` of the base config) train on that fraction of it, drawn with
the run's seed. The same steps: every RL row takes the optimizer steps of DE-GRPO's 3 rounds of
``round_passes`` passes over its share, with the same batch and G; GRPO on all data spreads them over the whole
pool (its ``round_passes`` raised and ``max_steps`` capped to that count). The held-out set: the description
questions of the first ``--heldout`` val clips (held-out identities), decoded greedily and scored with the facial
reward at uniform λ, before RL and after every round. Each RL row runs ``--seeds`` seeds (the rollouts'
sampling, the data order and draw, the value head).

Prints the table (held-out reward before and after RL, mean ± sd over seeds, and the comparison rule's
verdict), the training facial reward per round (Fig. 7: the mean of the round's sampled responses), and
DE-GRPO's median step time over GRPO's (every video decoded before the timed steps); with ``--in_sample``,
also each RL run's greedy reward on its own training samples before and after RL. Writes
``OUT/results.json`` and ``OUT/fig7.png`` (the reward against the step inside each round, per row).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "rl" / "facesynth.yaml"
ROWS = {  # Table 4's rows: label -> the switches' file
    "w.o. RL": "no_rl", "GRPO": "grpo", "GRPO (all data)": "grpo_all", "w.o. RD": "wo_rd", "DE-GRPO": "de_grpo",
}
# Not in Table 4, on request (--rows): GRPO with the facial reward tells the reward's part from the algorithm's.
EXTRA_ROWS = {"GRPO (facial reward)": {"algorithm": "grpo", "reward": "facial"}}


def row_config(row: str, overrides: dict, extra: dict | None = None):
    """The base config, the benchmark's overrides, then the row's switches (they define the row) and the row's
    own settings (``extra``), as ``favchat rl --config BASE --config ROW`` reads them."""
    from favchat.config import load_config
    from favchat.rl.config import RLConfig

    switches = EXTRA_ROWS[row] if row in EXTRA_ROWS else yaml.safe_load(
        (BASE.parent / "table4" / f"{ROWS[row]}.yaml").read_text())
    return load_config(RLConfig, overrides=yaml.safe_load(BASE.read_text()) | overrides | switches | (extra or {}))


def slug(row: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in row.lower()).strip("_")


def verdict(before: float, after: list[float]) -> str:
    """The rule fixed before the runs: RL raises the held-out reward when every seed ends above the supervised
    model and the mean gain exceeds twice the seeds' standard deviation; lowers it, mirrored; else no change."""
    gain = statistics.mean(after) - before
    sd = statistics.stdev(after) if len(after) > 1 else 0.0
    if all(a > before for a in after) and gain > 2 * sd:
        return "raised"
    if all(a < before for a in after) and -gain > 2 * sd:
        return "lowered"
    return "no change beyond the seeds' spread"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo", help="a `favchat demo` output folder (stage3/final, data/)")
    ap.add_argument("--out", default="runs/bench_de_grpo")
    ap.add_argument("--pool", type=int, default=320, help="train description questions forming 'all data'")
    ap.add_argument("--heldout", type=int, default=64, help="held-out clips whose description questions are scored")
    ap.add_argument("--seeds", type=int, default=3, help="RL runs per row (seeds 0, 1, ...)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=[*ROWS, *EXTRA_ROWS], metavar="ROW",
                    help=f"rows to run, of {[*ROWS, *EXTRA_ROWS]} (default: Table 4's)")
    ap.add_argument("--split", default="val", choices=("val", "test"), help="the held-out clips' split")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="RLConfig overrides for every row, e.g. learning_rate=1e-4 num_rounds=2")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (the demo's model is too small to gain from more on a shared machine)")
    ap.add_argument("--in_sample", action="store_true",
                    help="also score each RL run's own training samples (greedy) before and after: the gap between "
                         "what RL learns on its pool and what carries over to held-out identities")
    ap.add_argument("--smoke", action="store_true", help="smallest scale: checks the script end to end")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from favchat.data.datasets import VideoCache
    from favchat.data.manifest import read_manifest
    from favchat.model.modeling import FaVChatForConditionalGeneration
    from favchat.model.processing import FaVChatProcessor
    from favchat.rl.data import samples_from_clips
    from favchat.rl.plots import plot_round_panels
    from favchat.rl.trainer import RLTrainer

    demo = Path(args.demo)
    checkpoint, manifest = demo / "stage3" / "final", demo / "data" / "manifest.jsonl"
    if not (checkpoint / "config.json").is_file() or not manifest.is_file():
        raise SystemExit(f"{demo} is not a `favchat demo` output folder (no stage3/final or data/manifest.jsonl)")
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if args.smoke:
        args.pool, args.heldout, args.seeds = 16, 8, 1
        overrides |= {"num_rounds": 2, "round_passes": 1, "batch_size": 4, "num_generations": 4}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    clips = read_manifest(manifest)
    train = samples_from_clips([c for c in clips if c.split == "train"], ["description"])
    pool = random.Random(0).sample(train, min(args.pool, len(train)))
    held = sorted((c for c in clips if c.split == args.split), key=lambda c: c.id)[: args.heldout]
    heldout = samples_from_clips(held, ["description"])
    processor = FaVChatProcessor.from_pretrained(checkpoint)
    videos = VideoCache().loader(processor)  # every clip decoded once for all runs

    def run(row: str, seed: int, extra: dict) -> dict:
        cfg = row_config(row, overrides, extra | {"seed": seed, "eval_samples": len(heldout), "save_every": 0,
                                                  "output_dir": str(out / f"{slug(row)}-seed{seed}")})
        model = FaVChatForConditionalGeneration.from_pretrained(checkpoint)
        trainer = RLTrainer(cfg, model=model, processor=processor, train_samples=pool, eval_samples=heldout,
                            load_video=videos)
        trainer.preload_videos()
        scored = args.in_sample and cfg.num_rounds > 0
        in_sample = [trainer.evaluate(trainer.pool)] if scored else []
        t0 = time.perf_counter()
        res = trainer.train()
        wall = time.perf_counter() - t0
        if scored:
            in_sample.append(trainer.evaluate(trainer.pool))
        steps = [r for r in res["history"] if "reward" in r]
        evals = [r["heldout_reward"] for r in res["history"] if "heldout_reward" in r]
        rounds = sorted({int(r["round"]) for r in steps})
        return {
            "row": row, "seed": seed, "config": cfg.to_dict(), "pool": len(trainer.pool), "steps": len(steps),
            "heldout": evals, "in_sample": in_sample, "wall_s": wall,
            "time_step": statistics.median(r["time_step"] for r in steps) if steps else None,
            "round_reward": [statistics.mean(r["facial_reward"] for r in steps if int(r["round"]) == k) for k in rounds],
            "curves": [[r["facial_reward"] for r in steps if int(r["round"]) == k] for k in rounds],
            "removed": steps[-1]["removed"] if steps else 0, "decay_events": steps[-1]["decay_events"] if steps else 0,
            "completion_len": [r["completion_len"] for r in steps], "kl": [r["kl"] for r in steps],
        }

    # The steps every RL row takes: DE-GRPO's rounds over its share of the pool.
    de_cfg = row_config("DE-GRPO", overrides)
    share = max(1, round(de_cfg.pool_fraction * len(pool)))
    per_round = -(-de_cfg.round_passes * share // de_cfg.batch_size)
    total = de_cfg.num_rounds * per_round
    print(f"pool: {len(pool)} train descriptions (DE-GRPO's share {share}); held-out: {len(heldout)} {args.split} "
          f"descriptions; every RL row: {total} steps of {de_cfg.batch_size} samples x G={de_cfg.num_generations}")

    results: dict[str, list[dict]] = {}
    for row in args.rows:
        extra: dict = {}
        if row == "GRPO (all data)":  # the same steps over the whole pool
            extra = {"round_passes": -(-total * de_cfg.batch_size // len(pool)), "max_steps": total}
        seeds = [0] if row == "w.o. RL" else range(args.seeds)  # greedy decoding: no seed changes it
        results[row] = [run(row, seed, extra) for seed in seeds]
        for r in results[row]:
            print(f"  {row} seed {r['seed']}: held-out {[round(v, 4) for v in r['heldout']]}, {r['steps']} steps "
                  f"in {r['wall_s']:.0f} s" + (f"; its {r['pool']} training samples {r['in_sample'][0]:.4f} -> "
                                               f"{r['in_sample'][1]:.4f}" if r["in_sample"] else ""))

    before = statistics.mean(r["heldout"][0] for rs in results.values() for r in rs)
    print(f"\nTable 4 on FaceSynth ({len(heldout)} held-out {args.split} descriptions, greedy; facial reward at "
          "uniform λ)")
    print(f"{'row':<17} | {'pool':>5} | {'held-out before':>15} | {'after RL (mean ± sd)':>21} | per seed | verdict")
    for row, rs in results.items():
        after = [r["heldout"][-1] for r in rs]
        sd = f" ± {statistics.stdev(after):.4f}" if len(after) > 1 else ""
        judged = verdict(before, after) if row != "w.o. RL" else "-"
        print(f"{row:<17} | {rs[0]['pool']:>5} | {rs[0]['heldout'][0]:>15.4f} | {statistics.mean(after):>12.4f}{sd:>9} "
              f"| {[round(a, 4) for a in after]} | {judged}")
    print("\nFig. 7: training facial reward of the sampled responses, mean of each round (mean over seeds)")
    for row, rs in results.items():
        if rs[0]["round_reward"]:
            per = [statistics.mean(r["round_reward"][k] for r in rs) for k in range(len(rs[0]["round_reward"]))]
            extra = (f"; removed {statistics.mean(r['removed'] for r in rs):.1f}, decay events "
                     f"{statistics.mean(r['decay_events'] for r in rs):.1f}" if row in ("DE-GRPO",) else "")
            print(f"  {row:<17} " + " -> ".join(f"{v:.4f}" for v in per) + extra)
    if "DE-GRPO" in results and "GRPO" in results:
        t_de = statistics.median(r["time_step"] for r in results["DE-GRPO"])
        t_gr = statistics.median(r["time_step"] for r in results["GRPO"])
        print(f"median time per step: DE-GRPO {t_de:.2f} s, GRPO {t_gr:.2f} s: DE-GRPO / GRPO = {t_de / t_gr:.2f}x")

    curves = {row: [[statistics.mean(v) for v in zip(*(r["curves"][k] for r in rs), strict=True)]
                    for k in range(len(rs[0]["curves"]))] for row, rs in results.items() if rs[0]["curves"]}
    png = plot_round_panels(curves, out / "fig7.png")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "overrides": overrides, "before": before,
                                                  "results": results}, indent=1))
    print(f"plot: {png}; results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
