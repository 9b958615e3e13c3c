"""``favchat eval <benchmark>``: run a benchmark on a checkpoint (or score existing predictions) and write
predictions JSONL, ``metrics.json``, ``report.md`` and plots into ``--out``.

    favchat eval facesynth --manifest data/facesynth/manifest.jsonl --checkpoint ckpt/ --out runs/eval
    favchat eval dfew --root /data/DFEW --fold 1 --checkpoint ckpt/ --out runs/dfew1
    favchat eval mafw --root /data/MAFW --fold all --checkpoint ckpt/ --out runs/mafw
    favchat eval manifest --manifest m.jsonl --predictions preds.jsonl --out runs/x --judge.base_url http://localhost:8000/v1

Each benchmark is a function here, listed under ``eval`` in favchat/cli.py's ``COMMANDS``. The judge is any
OpenAI-compatible endpoint: ``--judge.base_url``/``--judge.model`` (or the environment variables
``FAVCHAT_JUDGE_BASE_URL``/``FAVCHAT_JUDGE_MODEL``, or ``--judge.config_file`` YAML with ``ChatAPIConfig``
fields); the key is read from the variable named by ``--judge.key_env``. Without any of
these, judge metrics are skipped. The sets as distributed: docs/datasets.md; protocols and generic layouts:
docs/evaluation.md.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from favchat.cli import CommandError

log = logging.getLogger(__name__)

@dataclass
class EvalRun:
    """Where the results go and the checkpoint that answers."""

    out: str = ""
    """Output folder (predictions, metrics.json, report.md)."""
    checkpoint: str | None = None
    """FaVChat checkpoint folder (save_pretrained format)."""
    max_new_tokens: int = 256
    """Generation length."""
    num_frames: int | None = None
    """Frames sampled per stream (None: the checkpoint's processor's)."""
    device: str | None = None
    """Torch device (None: cuda if available, else cpu)."""
    limit: int | None = None
    """Evaluate only the first N items (a quick look)."""
    method: str = "FaVChat"
    """Method name in the report tables."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out is required: the folder for predictions, metrics.json and report.md (--out DIR)")


@dataclass
class JudgeOptions:
    """The judge: any OpenAI-compatible endpoint (or FAVCHAT_JUDGE_BASE_URL / FAVCHAT_JUDGE_MODEL)."""

    config_file: str | None = None
    """YAML file with ChatAPIConfig fields."""
    base_url: str | None = None
    """e.g. http://localhost:8000/v1 (env FAVCHAT_JUDGE_BASE_URL)."""
    model: str | None = None
    """Judge model name (env FAVCHAT_JUDGE_MODEL)."""
    key_env: str | None = None
    """Environment variable holding the API key (None: OPENAI_API_KEY)."""
    scale: Literal[5, 10] = 5
    """Criterion score scale."""
    concurrency: int | None = None
    """Requests in flight (None: 4)."""
    cache: str | None = None
    """Reply cache folder (None: <out>/judge_cache)."""
    enabled: bool = True
    """False: skip judge metrics even if a judge is configured."""


Tokenizer = Literal["auto", "ptb", "simple"]


def facesynth(config: EvalRun, judge: JudgeOptions, manifest: str, split: str = "test", consistency: bool = True,
              tokenizer: Tokenizer = "auto") -> int:
    """The test split of a FaceSynth (or any FaVChat) manifest: captions from summaries, judged QA.

    Args:
        manifest: FaVChat manifest JSONL.
        split: Split to evaluate ('all' for every clip).
        consistency: Also ask the rephrased questions (the consistency score; doubles QA generation).
        tokenizer: Caption tokenizer: ptb needs Java; simple is Java-free.
    """
    return _run("facesynth", config, judge, manifest=manifest, split=split, consistency=consistency,
                tokenizer=tokenizer)


def manifest(config: EvalRun, judge: JudgeOptions, manifest: str, predictions: str, split: str = "test",
             tokenizer: Tokenizer = "auto") -> int:
    """Score an existing predictions JSONL against a manifest (no model needed).

    Args:
        manifest: FaVChat manifest JSONL.
        predictions: JSONL of {id, answer}: clip ids for summaries, '<clip id>#qa<k>' for QA pairs.
        split: Split to evaluate ('all' for every clip).
        tokenizer: Caption tokenizer: ptb needs Java; simple is Java-free.
    """
    return _run("manifest", config, judge, manifest=manifest, predictions=predictions, split=split,
                tokenizer=tokenizer)


Protocol = Literal["describe-then-classify", "direct"]
Fold = int | Literal["all"] | None


def dfew(config: EvalRun, root: str, fold: Fold = None, labels: str | None = None,
         protocol: Protocol = "describe-then-classify",
         clips: Literal["auto", "original", "clip_224x224", "clip_224x224_16f"] = "auto") -> int:
    """DFEW zero-shot emotion recognition (7 classes), UAR/WAR.

    Args:
        root: The DFEW folder as distributed (docs/datasets.md), or class folders (docs/evaluation.md).
        fold: 1..5, or 'all': the mean over the five folds' test sets (the paper's protocol); with class
            folders, <root>/fold_<k>/.
        labels: A label CSV (video,label) instead of the set's own files.
        protocol: How the answer becomes a class.
        clips: Which of DFEW's Clip/ folders to read (auto: original videos, else the frame folders).
    """
    return _run("dfew", config, None, root=root, fold=fold, labels=labels, protocol=protocol, clips=clips)


def mafw(config: EvalRun, root: str, fold: Fold = None, labels: str | None = None,
         protocol: Protocol = "describe-then-classify") -> int:
    """MAFW zero-shot emotion recognition (11 classes), UAR/WAR.

    Args:
        root: The MAFW folder as distributed (docs/datasets.md), or class folders (docs/evaluation.md).
        fold: 1..5, or 'all': the mean over the five folds' test sets (the paper's protocol); with class
            folders, <root>/fold_<k>/.
        labels: A label CSV (video,label) instead of the set's own files.
        protocol: How the answer becomes a class.
    """
    return _run("mafw", config, None, root=root, fold=fold, labels=labels, protocol=protocol)


def captions(config: EvalRun, judge: JudgeOptions, annotations: str, videos_root: str | None = None,
             tokenizer: Tokenizer = "auto") -> int:
    """DFEC (test.json) or any caption set (annotations.jsonl): CIDEr, ROUGE-L, judge scores, AutoDQ.

    Args:
        annotations: DFEC's test.json, or an annotations.jsonl.
        videos_root: DFEC: the folder holding the source sets that test.json's video paths point into (None:
            test.json's folder).
        tokenizer: Caption tokenizer: ptb needs Java; simple is Java-free.
    """
    return _run("captions", config, judge, annotations=annotations, videos_root=videos_root, tokenizer=tokenizer)


def ytf(config: EvalRun, root: str, pairs: str | None = None,
        images: Literal["auto", "frame", "aligned"] = "auto",
        scorer: Literal["labels", "embedding"] = "labels") -> int:
    """YouTube Faces verification pairs: accuracy under the 10-fold threshold protocol.

    Args:
        root: The YouTube Faces folder (frame_images_DB/, meta_data/ or splits.txt), or a folder of pair videos
            with splits.txt/pairs.csv.
        pairs: Pairs file: splits.txt, splits_corrected.txt, meta_and_splits.mat or pairs.csv (None: found under
            root).
        images: YouTube Faces: frame_images_DB or aligned_images_DB (auto: the first present).
        scorer: Pair score from the two descriptions.
    """
    return _run("ytf", config, None, root=root, pairs=pairs, images=images, scorer=scorer)


def emer(config: EvalRun, judge: JudgeOptions, annotations: str, videos: str | None = None) -> int:
    """EMER explainable emotion reasoning: clue and label overlap (judge required).

    Args:
        annotations: EMER's gt-eng.csv (v1) or final-EMER-reason.csv (v2), or an annotations.jsonl.
        videos: The folder of MER2023's clips (None: the CSV's folder, or video/ or videos/ beside it or beside
            its folder).
    """
    return _run("emer", config, judge, annotations=annotations, videos=videos)


def frames(config: EvalRun, judge: JudgeOptions, frames: list[int], annotations: str | None = None,
           manifest: str | None = None, videos_root: str | None = None, tokenizer: Tokenizer = "auto") -> int:
    """The inference frame-count sweep (Fig. 8) on a caption set or manifest.

    Args:
        frames: Frame counts, e.g. [8, 16, 32, 64].
        annotations: A caption set: DFEC's test.json or annotations.jsonl (or --manifest).
        manifest: FaVChat manifest (its test split's summaries), instead of --annotations.
        videos_root: DFEC: the folder holding the source sets that test.json's video paths point into (None:
            test.json's folder).
        tokenizer: Caption tokenizer: ptb needs Java; simple is Java-free.
    """
    if (annotations is None) == (manifest is None):
        raise CommandError("give one of --annotations and --manifest")
    return _run("frames", config, judge, frames=frames, annotations=annotations, manifest=manifest,
                videos_root=videos_root, tokenizer=tokenizer)


def _run(benchmark: str, run: EvalRun, judge: JudgeOptions | None, **options: Any) -> int:
    """The old flat argument namespace, so the benchmarks below read as one list."""
    paths = {k: Path(v) if isinstance(v, str) and k in ("manifest", "predictions", "root", "labels", "annotations",
                                                        "pairs", "videos", "videos_root") else v for k, v in options.items()}
    judge = judge or JudgeOptions(enabled=False)
    args = SimpleNamespace(benchmark=benchmark, out=Path(run.out), checkpoint=run.checkpoint and Path(run.checkpoint),
                           max_new_tokens=run.max_new_tokens, num_frames=run.num_frames, device=run.device,
                           limit=run.limit, method=run.method, no_progress=not run.progress,
                           judge_config=judge.config_file and Path(judge.config_file), judge_base_url=judge.base_url,
                           judge_model=judge.model, judge_key_env=judge.key_env, judge_scale=judge.scale,
                           judge_concurrency=judge.concurrency, judge_cache=judge.cache and Path(judge.cache),
                           no_judge=not judge.enabled, no_consistency=not options.get("consistency", True), **paths)
    return main(args)


def _judge_configured(args: SimpleNamespace) -> bool:
    return not args.no_judge and bool(args.judge_config or args.judge_base_url or args.judge_model or any(
        k in os.environ for k in ("FAVCHAT_JUDGE_BASE_URL", "FAVCHAT_JUDGE_MODEL")))


def _judge(args: SimpleNamespace) -> Any:
    from favchat.chat_api import ChatAPIConfig
    from favchat.eval.judge import Judge

    if not _judge_configured(args):
        if not args.no_judge:
            log.info("no judge configured (--judge.base_url / --judge.model): judge metrics skipped")
        return None
    if args.judge_config:
        from favchat.config import load_config

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


def _predictor(args: SimpleNamespace, num_frames: int | None = None) -> Any:
    from favchat.eval.predict import ModelPredictor

    if args.checkpoint is None:
        raise CommandError("--checkpoint is required to generate answers")
    return ModelPredictor(args.checkpoint, num_frames=num_frames or args.num_frames,
                          max_new_tokens=args.max_new_tokens, device=args.device)


def _load(args: SimpleNamespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Read the benchmark's items (before anything is written): the items by kind, and the report's input lines."""
    from favchat import prompts
    from favchat.eval import benchmarks
    from favchat.eval.sets import resolve

    b, lim = args.benchmark, (lambda xs: xs[: args.limit]) if args.limit else (lambda xs: xs)
    describe = prompts.load("describe")
    if b in ("facesynth", "manifest"):
        split = None if args.split == "all" else args.split
        caps, qa = benchmarks.load_manifest_split(args.manifest, split, check_videos=b == "facesynth", default_question=describe)
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
        return {"samples": lim(benchmarks.load_manifest_split(args.manifest, "test", default_question=describe)[0])}, \
            {"manifest": f"{args.manifest} (split test)"}
    if b == "emer":
        samples, what = resolve.emer_samples(args.annotations, prompts.load("emer_question"), args.videos)
        return {"samples": lim(samples)}, {"data": what}
    pairs, what = resolve.ytf_pairs(args.root, args.pairs, args.images)
    return {"pairs": lim(pairs)}, {"data": what}


def main(args: SimpleNamespace) -> int:
    from favchat.eval import benchmarks, protocols
    from favchat.eval.benchmarks import BenchmarkError
    from favchat.eval.judge import JudgeError
    from favchat.eval.report import write_report

    progress = not args.no_progress
    results: dict[str, Any] = {"benchmark": args.benchmark, "inputs": {}}
    b = args.benchmark
    try:
        if b == "emer" and not _judge_configured(args):
            raise CommandError("EMER is scored by a judge; set --judge.base_url/--judge.model")
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
                results["captions"] = protocols.run_captions(predictor, data["caps"], args.out, judge, args.tokenizer, progress)
            if data["qa"]:
                results["qa"] = protocols.run_qa(predictor, data["qa"], args.out, judge, not args.no_consistency, progress)
        elif b == "manifest":
            from favchat.eval.predict import read_predictions

            caps, qa = data["caps"], data["qa"]
            preds = {k: v["answer"] for k, v in read_predictions(args.predictions).items()}
            known = caps + qa + [benchmarks.Sample(f"{s.id}~rephrased", s.video) for s in qa]
            benchmarks.check_prediction_ids(preds, known, str(args.predictions))
            results["inputs"]["predictions"] = str(args.predictions)
            cap_done = [s for s in caps if s.id in preds]
            qa_done = [s for s in qa if s.id in preds]
            if not cap_done and not qa_done:
                raise BenchmarkError(f"{args.predictions}: no prediction matches a clip or QA id of the manifest")
            if cap_done:
                results["captions"] = protocols.score_captions(cap_done, preds, judge, args.tokenizer)
            if qa_done:
                results["qa"] = protocols.score_qa(qa_done, preds, judge)
        elif b in ("dfew", "mafw"):
            classes, folds = benchmarks.DATASET_CLASSES[b], data["folds"]
            results["classification"] = (
                protocols.run_classification_folds(_predictor(args), folds, classes, args.out, args.protocol, progress)
                if len(folds) > 1 else
                protocols.run_classification(_predictor(args), next(iter(folds.values())), classes, args.out, args.protocol,
                                      progress))
        elif b == "captions":
            results["captions"] = protocols.run_captions(_predictor(args), data["samples"], args.out, judge, args.tokenizer,
                                                  progress)
        elif b == "ytf":
            results["verification"] = protocols.run_verification(_predictor(args), data["pairs"], args.out, args.scorer,
                                                          progress=progress)
        elif b == "emer":
            results["emer"] = protocols.run_emer(_predictor(args), data["samples"], args.out, judge, progress)
        elif b == "frames":
            results["frame_sweep"] = protocols.run_frame_sweep(lambda k: _predictor(args, k), args.frames, data["samples"],
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
