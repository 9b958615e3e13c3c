"""``favchat eval <benchmark>``: run a benchmark on a checkpoint (or score existing predictions) and write
predictions JSONL, ``metrics.json``, ``report.md`` and plots into ``--out``.

    favchat eval facesynth --manifest data/facesynth/manifest.jsonl --checkpoint ckpt/ --out runs/eval
    favchat eval dfew --root /data/DFEW --fold 1 --checkpoint ckpt/ --out runs/dfew1
    favchat eval mafw --root /data/MAFW --fold all --checkpoint ckpt/ --out runs/mafw
    favchat eval manifest --manifest m.jsonl --predictions preds.jsonl --out runs/x --judge-base-url http://localhost:8000/v1

The judge is any OpenAI-compatible endpoint: ``--judge-base-url``/``--judge-model`` (or the environment
variables ``FAVCHAT_JUDGE_BASE_URL``/``FAVCHAT_JUDGE_MODEL``, or ``--judge-config`` YAML with
``ChatAPIConfig`` fields); the key is read from the variable named by ``--judge-key-env``. Without any of
these, judge metrics are skipped. The sets as distributed: docs/datasets.md; protocols and generic layouts:
docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BENCHMARKS = {
    "facesynth": "the test split of a FaceSynth (or any FaVChat) manifest: captions from summaries, judged QA",
    "manifest": "score an existing predictions JSONL against a manifest (no model needed)",
    "dfew": "DFEW zero-shot emotion recognition (7 classes), UAR/WAR",
    "mafw": "MAFW zero-shot emotion recognition (11 classes), UAR/WAR",
    "captions": "DFEC (test.json) or any caption set (annotations.jsonl): CIDEr, ROUGE-L, judge scores, AutoDQ",
    "ytf": "YouTube Faces verification pairs: accuracy under the 10-fold threshold protocol",
    "emer": "EMER explainable emotion reasoning: clue and label overlap (judge required)",
    "frames": "the inference frame-count sweep (Fig. 8) on a caption set or manifest",
}


def _common(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (predictions, metrics.json, report.md)")
    if model:
        p.add_argument("--checkpoint", type=Path, help="FaVChat checkpoint folder (save_pretrained format)")
        p.add_argument("--max-new-tokens", type=int, default=256, help="generation length (default 256)")
        p.add_argument("--num-frames", type=int, help="override the processor's number of frames")
        p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--limit", type=int, help="evaluate only the first N items (a quick look)")
    p.add_argument("--method", default="FaVChat", help="method name in the report tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("judge (any OpenAI-compatible endpoint)")
    g.add_argument("--judge-config", type=Path, help="YAML file with ChatAPIConfig fields")
    g.add_argument("--judge-base-url", help="e.g. http://localhost:8000/v1 (env FAVCHAT_JUDGE_BASE_URL)")
    g.add_argument("--judge-model", help="judge model name (env FAVCHAT_JUDGE_MODEL)")
    g.add_argument("--judge-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    g.add_argument("--judge-scale", type=int, choices=(5, 10), default=5, help="criterion score scale (default 5)")
    g.add_argument("--judge-concurrency", type=int, help="requests in flight (default 4)")
    g.add_argument("--judge-cache", type=Path, help="reply cache folder (default <out>/judge_cache)")
    g.add_argument("--no-judge", action="store_true", help="skip judge metrics even if a judge is configured")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint on the paper's benchmarks",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        b = sub.add_parser(name, help=help_text, description=help_text)
        _common(b, model=name != "manifest")
        if name in ("facesynth", "manifest"):
            b.add_argument("--manifest", required=True, type=Path, help="FaVChat manifest JSONL")
            b.add_argument("--split", default="test", help="split to evaluate (default test; 'all' for every clip)")
        if name == "facesynth":
            b.add_argument("--no-consistency", action="store_true",
                           help="do not ask the rephrased questions (halves QA generation; no consistency score)")
        if name == "manifest":
            b.add_argument("--predictions", required=True, type=Path,
                           help="JSONL of {id, answer}: clip ids for summaries, '<clip id>#qa<k>' for QA pairs")
        if name in ("dfew", "mafw"):
            b.add_argument("--root", required=True, type=Path,
                           help=f"the {name.upper()} folder as distributed (docs/datasets.md), or class folders "
                                "(docs/evaluation.md)")
            b.add_argument("--fold", help="1..5, or 'all': the mean over the five folds' test sets (the paper's "
                                          "protocol); with class folders, <root>/fold_<k>/")
            b.add_argument("--labels", type=Path, help="a label CSV (video,label) instead of the set's own files")
            b.add_argument("--protocol", choices=("describe-then-classify", "direct"), default="describe-then-classify")
        if name == "dfew":
            b.add_argument("--clips", choices=("auto", "original", "clip_224x224", "clip_224x224_16f"), default="auto",
                           help="which of DFEW's Clip/ folders to read (auto: original videos, else the frame folders)")
        if name == "captions":
            b.add_argument("--annotations", required=True, type=Path, help="DFEC's test.json, or an annotations.jsonl")
        if name == "emer":
            b.add_argument("--annotations", required=True, type=Path,
                           help="EMER's gt-eng.csv (v1) or final-EMER-reason.csv (v2), or an annotations.jsonl")
            b.add_argument("--videos", type=Path, help="the folder of MER2023's clips (default: the CSV's folder, or "
                                                       "video/ or videos/ beside it or beside its folder)")
        if name in ("captions", "frames"):
            b.add_argument("--videos-root", type=Path, help="DFEC: the folder holding the source sets that test.json's "
                                                            "video paths point into (default: test.json's folder)")
        if name in ("captions", "facesynth", "manifest", "frames"):
            b.add_argument("--tokenizer", choices=("auto", "ptb", "simple"), default="auto",
                           help="caption tokenizer: ptb needs Java; simple is Java-free (default auto)")
        if name == "ytf":
            b.add_argument("--root", required=True, type=Path,
                           help="the YouTube Faces folder (frame_images_DB/, meta_data/ or splits.txt), or a folder "
                                "of pair videos with splits.txt/pairs.csv")
            b.add_argument("--pairs", type=Path, help="pairs file: splits.txt, splits_corrected.txt, "
                                                      "meta_and_splits.mat or pairs.csv (default: found under --root)")
            b.add_argument("--images", choices=("auto", "frame", "aligned"), default="auto",
                           help="YouTube Faces: frame_images_DB or aligned_images_DB (auto: the first present)")
            b.add_argument("--scorer", choices=("labels", "embedding"), default="labels",
                           help="pair score from the two descriptions (default labels)")
        if name == "frames":
            src = b.add_mutually_exclusive_group(required=True)
            src.add_argument("--annotations", type=Path, help="a caption set: DFEC's test.json or annotations.jsonl")
            src.add_argument("--manifest", type=Path, help="FaVChat manifest (its test split's summaries)")
            b.add_argument("--frames", type=int, nargs="+", required=True, help="frame counts, e.g. 8 16 32 64")
        b.set_defaults(func=main)


def _judge_configured(args: argparse.Namespace) -> bool:
    return not args.no_judge and bool(args.judge_config or args.judge_base_url or args.judge_model or any(
        k in os.environ for k in ("FAVCHAT_JUDGE_BASE_URL", "FAVCHAT_JUDGE_MODEL")))


def _judge(args: argparse.Namespace) -> Any:
    from favchat.chat_api import ChatAPIConfig
    from favchat.eval.judge import Judge

    if not _judge_configured(args):
        if not args.no_judge:
            log.info("no judge configured (--judge-base-url / --judge-model): judge metrics skipped")
        return None
    if args.judge_config:
        from favchat.config_io import load_config

        base = load_config(ChatAPIConfig, args.judge_config)
    else:
        base = ChatAPIConfig.from_env(prefix="FAVCHAT_JUDGE_")
    for field, value in (("base_url", args.judge_base_url), ("model", args.judge_model),
                         ("api_key_env", args.judge_key_env), ("concurrency", args.judge_concurrency)):
        if value is not None:
            setattr(base, field, value)
    base.cache_dir = str(args.judge_cache or base.cache_dir or args.out / "judge_cache")
    return Judge.from_config(base, scale=args.judge_scale, results_path=args.out / "judge_results.jsonl",
                             progress=not args.no_progress)


def _predictor(args: argparse.Namespace, num_frames: int | None = None) -> Any:
    from favchat.eval.predict import ModelPredictor

    if args.checkpoint is None:
        raise SystemExit(f"favchat eval {args.benchmark}: --checkpoint is required to generate answers")
    return ModelPredictor(args.checkpoint, num_frames=num_frames or args.num_frames,
                          max_new_tokens=args.max_new_tokens, device=args.device)


def _load(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Read the benchmark's items (before anything is written): the items by kind, and the report's input lines."""
    from favchat import prompts
    from favchat.eval import benchmarks as bm
    from favchat.eval.sets import resolve

    b, lim = args.benchmark, (lambda xs: xs[: args.limit]) if args.limit else (lambda xs: xs)
    describe = prompts.load("describe")
    if b in ("facesynth", "manifest"):
        split = None if args.split == "all" else args.split
        caps, qa = bm.load_manifest_split(args.manifest, split, check_videos=b == "facesynth", default_question=describe)
        return {"caps": lim(caps), "qa": lim(qa)}, {"manifest": f"{args.manifest} (split {args.split})"}
    if b in ("dfew", "mafw"):
        folds, what = resolve.emotion_folds(b, args.root, resolve.parse_fold(args.fold), args.labels,
                                            getattr(args, "clips", "auto"))
        fold_line = {"folds": ", ".join(map(str, folds))} if args.fold else {}
        return {"folds": {k: lim(v) for k, v in folds.items()}}, {"data": what, **fold_line}
    if b == "captions" or (b == "frames" and args.annotations):
        samples, what = resolve.caption_samples(args.annotations, describe, args.videos_root)
        return {"samples": lim(samples)}, {"data": what}
    if b == "frames":
        return {"samples": lim(bm.load_manifest_split(args.manifest, "test", default_question=describe)[0])}, \
            {"manifest": f"{args.manifest} (split test)"}
    if b == "emer":
        samples, what = resolve.emer_samples(args.annotations, prompts.load("emer_question"), args.videos)
        return {"samples": lim(samples)}, {"data": what}
    pairs, what = resolve.ytf_pairs(args.root, args.pairs, args.images)
    return {"pairs": lim(pairs)}, {"data": what}


def main(args: argparse.Namespace) -> int:
    from favchat.eval import benchmarks as bm
    from favchat.eval import protocols as pr
    from favchat.eval.benchmarks import BenchmarkError
    from favchat.eval.judge import JudgeError
    from favchat.eval.report import write_report

    if not args.verbose:  # the openai client's HTTP layer logs one INFO line per judge request
        logging.getLogger("httpx2").setLevel(logging.WARNING)
    progress = not args.no_progress
    results: dict[str, Any] = {"benchmark": args.benchmark, "inputs": {}}
    b = args.benchmark
    try:
        if b == "emer" and not _judge_configured(args):
            raise SystemExit("favchat eval emer: EMER is scored by a judge; set --judge-base-url/--judge-model")
        data, inputs = _load(args)  # a wrong root or file stops here, before anything is written
        results["inputs"].update(inputs)
        args.out.mkdir(parents=True, exist_ok=True)
        judge = _judge(args)
        if judge is not None:
            results["inputs"]["judge"] = f"{judge.client.config.model} @ {judge.client.config.base_url or 'default'}"
        if getattr(args, "checkpoint", None):
            results["inputs"]["checkpoint"] = str(args.checkpoint)
        if b == "facesynth":
            predictor = _predictor(args)
            if data["caps"]:
                results["captions"] = pr.run_captions(predictor, data["caps"], args.out, judge, args.tokenizer, progress)
            if data["qa"]:
                results["qa"] = pr.run_qa(predictor, data["qa"], args.out, judge, not args.no_consistency, progress)
        elif b == "manifest":
            from favchat.eval.predict import read_predictions

            caps, qa = data["caps"], data["qa"]
            preds = {k: v["answer"] for k, v in read_predictions(args.predictions).items()}
            known = caps + qa + [bm.Sample(f"{s.id}~rephrased", s.video) for s in qa]
            bm.check_prediction_ids(preds, known, str(args.predictions))
            results["inputs"]["predictions"] = str(args.predictions)
            cap_done = [s for s in caps if s.id in preds]
            qa_done = [s for s in qa if s.id in preds]
            if not cap_done and not qa_done:
                raise BenchmarkError(f"{args.predictions}: no prediction matches a clip or QA id of the manifest")
            if cap_done:
                results["captions"] = pr.score_captions(cap_done, preds, judge, args.tokenizer)
            if qa_done:
                results["qa"] = pr.score_qa(qa_done, preds, judge)
        elif b in ("dfew", "mafw"):
            classes, folds = bm.DATASET_CLASSES[b], data["folds"]
            results["classification"] = (
                pr.run_classification_folds(_predictor(args), folds, classes, args.out, args.protocol, progress)
                if len(folds) > 1 else
                pr.run_classification(_predictor(args), next(iter(folds.values())), classes, args.out, args.protocol,
                                      progress))
        elif b == "captions":
            results["captions"] = pr.run_captions(_predictor(args), data["samples"], args.out, judge, args.tokenizer,
                                                  progress)
        elif b == "ytf":
            results["verification"] = pr.run_verification(_predictor(args), data["pairs"], args.out, args.scorer,
                                                          progress=progress)
        elif b == "emer":
            results["emer"] = pr.run_emer(_predictor(args), data["samples"], args.out, judge, progress)
        elif b == "frames":
            results["frame_sweep"] = pr.run_frame_sweep(lambda k: _predictor(args, k), args.frames, data["samples"],
                                                        args.out, judge, args.tokenizer, progress)
    except (BenchmarkError, JudgeError, FileNotFoundError, ValueError) as e:
        print(f"favchat eval {args.benchmark}: error: {e}", file=sys.stderr)
        return 2
    if judge is not None and (judge.client.usage.calls or judge.client.usage.cached or judge.resumed):
        u = judge.client.usage
        results["judge_usage"] = {"calls": u.calls, "resumed": judge.resumed, "cached": u.cached, "failed": u.failed,
                                  "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "usd": u.usd}
    paths = write_report(args.out, results, args.method)
    print(f"wrote {paths['report']} and {paths['metrics']}")
    return 0
