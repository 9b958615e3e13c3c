"""The evaluation's answers one question at a time against batches of questions about several videos
(``ModelPredictor.answer_batch``, what ``favchat.eval.predict.predict`` uses), on a demo's checkpoint.

    favchat demo --out runs/demo                               # once: the clips and the checkpoint
    python benchmarks/bench_predict.py --demo runs/demo        # the first 20 test clips' questions

The questions are those the demo's evaluation asks (every scored question and the descriptions of each clip),
in its order: clip by clip. They are cut into chunks of ``--batch_size`` and each chunk is answered both ways,
in alternating order from chunk to chunk so that a machine's load falls on both alike; both ways encode each
video once (the predictor keeps the last batch's tower states). Prints the seconds per answer each way, the
ratio, and how many answers differ (greedy decoding: a left-padded batch should give the same answers, up to
float rounding at a near tie).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", default="runs/demo", help="a `favchat demo` output folder (data/, stage3/final)")
    ap.add_argument("--checkpoint", default=None, help="another checkpoint than the demo's stage3/final")
    ap.add_argument("--clips", type=int, default=20, help="the first N test clips (by id)")
    ap.add_argument("--max_new_tokens", type=int, default=96, help="the demo's evaluation setting")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--batch_size", type=int, default=None, help="questions per batch (default: predict's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import inspect

    from favchat.data.manifest import read_manifest
    from favchat.eval.predict import ModelPredictor, VideoRef, predict
    from favchat.eval.qa_accuracy import SCORED_TYPES

    demo = Path(args.demo)
    checkpoint = Path(args.checkpoint) if args.checkpoint else demo / "stage3" / "final"
    manifest = demo / "data" / "manifest.jsonl"
    if not (checkpoint / "config.json").is_file() or not manifest.is_file():
        raise SystemExit(f"no checkpoint at {checkpoint} or no {manifest}")
    clips = sorted(read_manifest(manifest, split="test"), key=lambda c: c.id)[: args.clips]
    items = [(VideoRef(c.video_path, c.frame_range), qa.question) for c in clips for qa in c.qa
             if qa.type in SCORED_TYPES or qa.type == "description"]
    size = args.batch_size or inspect.signature(predict).parameters["batch_size"].default
    pred = ModelPredictor(checkpoint, max_new_tokens=args.max_new_tokens)
    pred.load()

    seconds = {"one by one": 0.0, "batched": 0.0}
    differ = 0
    for k in range(0, len(items), size):
        chunk, got = items[k:k + size], {}
        for way in (("one by one", "batched") if k // size % 2 == 0 else ("batched", "one by one")):
            pred._states = {}  # each way encodes the chunk's videos itself
            t = time.perf_counter()
            got[way] = [pred(v, q) for v, q in chunk] if way == "one by one" else pred.answer_batch(chunk)
            seconds[way] += time.perf_counter() - t
        differ += sum(a != b for a, b in zip(got["one by one"], got["batched"], strict=True))
    answers = len(items)

    print(f"{checkpoint}: {answers} answers about {len(clips)} test clips, max_new_tokens {args.max_new_tokens}, "
          f"{torch.get_num_threads()} torch thread(s), batches of {size}")
    for way, s in seconds.items():
        print(f"  {way:<10}: {s:7.1f} s, {1000 * s / answers:6.1f} ms per answer")
    print(f"  one by one / batched = {seconds['one by one'] / seconds['batched']:.2f}x; "
          f"answers that differ: {differ} of {answers}")


if __name__ == "__main__":
    main()
