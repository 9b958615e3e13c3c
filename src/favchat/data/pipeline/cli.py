"""``favchat data ...``: the dataset pipeline's subcommands (filter, trim, extract, train-extractor,
annotate, qa, build, merge, review, import-celebv). ``build`` runs every stage; each stage alone reads the state the
earlier stages left in ``--out`` and skips what is finished.
"""

from __future__ import annotations

import argparse
import sys


def _shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (state, manifest, table); shards work in "
                                                 "OUT/shards/<i>-of-<N>/")
    p.add_argument("--num-shards", type=int, default=1, help="split the videos into this many shards")
    p.add_argument("--shard-index", type=int, default=0, help="which shard this process runs (0-based)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", nargs="+", required=True, help="video files and/or folders (searched recursively)")
    p.add_argument("--detector", default="auto", help="face detector: auto, haar, yuface or mediapipe")
    p.add_argument("--face-threshold", type=float, default=0.60, help="keep a video when at least this fraction "
                                                                      "of sampled frames shows a face")
    p.add_argument("--sample-stride", type=int, default=16, help="detect on every n-th frame")
    p.add_argument("--max-samples", type=int, default=256, help="at most this many sampled frames per video")
    p.add_argument("--decode-max-side", type=int, default=384, help="frames are downscaled to this while decoding")
    p.add_argument("--detect-max-side", type=int, default=192, help="and to this for face detection")
    p.add_argument("--folder-fps", type=float, default=25.0,
                   help="frame rate of frame-folder videos (a folder of images, e.g. YouTube Faces), which carry none")


def _trim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-frames", type=int, default=36, help="shortest clip, in frames")
    p.add_argument("--max-frames", type=int, default=600, help="longest clip, in frames")
    p.add_argument("--write-clips", action="store_true", help="also write each clip as an mp4 under OUT/clips/")


def _extract_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extractor", help="checkpoint written by `favchat data train-extractor`")
    p.add_argument("--device", default="auto", help="extractor device (auto: cuda when available)")


def _text_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("template", "api"), default="template",
                   help="template: offline rule-based writer; api: an OpenAI-compatible chat endpoint")
    p.add_argument("--api-base-url", help="e.g. http://localhost:8000/v1 (env FAVCHAT_API_BASE_URL)")
    p.add_argument("--api-model", help="model name (env FAVCHAT_API_MODEL; default gpt-4o)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--api-concurrency", type=int, default=4, help="requests in flight at most")
    p.add_argument("--api-max-retries", type=int, default=5, help="retries per request (errors and rejected replies)")
    p.add_argument("--api-timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--api-backoff", type=float, default=1.0, help="first retry wait in seconds (doubles)")
    p.add_argument("--api-cache", help="reply cache folder (default OUT/api_cache): a rerun never pays twice")
    p.add_argument("--usd-per-1k-prompt", type=float, default=0.0, help="price for the cost column")
    p.add_argument("--usd-per-1k-completion", type=float, default=0.0, help="price for the cost column")
    p.add_argument("--num-qa", type=int, default=4, help="QA pairs per summary")
    p.add_argument("--max-api-frames", type=int, default=8, help="frames sent with a summary request")


def _config(args: argparse.Namespace):
    from favchat.chat_api import ChatAPIConfig
    from favchat.data.pipeline.annotate import AnnotateConfig
    from favchat.data.pipeline.build import PipelineConfig
    from favchat.data.pipeline.filter import FilterConfig
    from favchat.data.pipeline.trim import TrimConfig

    g = vars(args)
    tcfg = TrimConfig(g.get("min_frames", 36), g.get("max_frames", 600))
    fcfg = FilterConfig(min_frames=tcfg.min_frames, **{k: g[k] for k in (
        "detector", "face_threshold", "sample_stride", "max_samples", "decode_max_side", "detect_max_side",
        "folder_fps") if k in g})
    acfg = AnnotateConfig()
    if "backend" in g:
        api = ChatAPIConfig.from_env(
            base_url=args.api_base_url, model=args.api_model, api_key_env=args.api_key_env,
            concurrency=args.api_concurrency, max_retries=args.api_max_retries, timeout_s=args.api_timeout,
            backoff_s=args.api_backoff, cache_dir=args.api_cache or f"{args.out}/api_cache",
            usd_per_1k_prompt=args.usd_per_1k_prompt, usd_per_1k_completion=args.usd_per_1k_completion)
        acfg = AnnotateConfig(backend=args.backend, api=api, num_qa=args.num_qa, max_frames=args.max_api_frames)
    return PipelineConfig(
        out=args.out, filter=fcfg, trim=tcfg, annotate=acfg, extractor=g.get("extractor"),
        device=g.get("device", "auto"), source=g.get("source", "unknown"), split=g.get("split", "train"),
        write_clips=g.get("write_clips", False), num_shards=args.num_shards, shard_index=args.shard_index,
        progress=not args.no_progress)


def _print_table(s: dict) -> None:
    from favchat.data.pipeline.build import format_table

    print(format_table(s))


def _stage(stages: tuple[str, ...]):
    def run(args: argparse.Namespace) -> int:
        from favchat.data.pipeline.build import (
            State,
            check_extractor,
            discover,
            finish,
            run_text_stages,
            run_video_stages,
            shard_of,
        )

        cfg = _config(args)
        items = None
        try:
            if "filter" in stages:
                items = [it for it in discover(args.input) if shard_of(it.key, cfg.num_shards) == cfg.shard_index]
            if "extract" in stages:
                check_extractor(cfg.extractor)
        except (ValueError, FileNotFoundError) as e:
            print(f"favchat data {args.data_command}: error: {e}", file=sys.stderr)
            return 2
        state = State(cfg.work)
        try:
            ann = None
            if set(stages) & {"filter", "trim", "extract"}:
                run_video_stages(cfg, items, state, stages)
            if set(stages) & {"summary", "qa"}:
                ann = run_text_stages(cfg, state, stages)
            _print_table(finish(cfg, state, ann, expected=len(items) if items is not None else None))
        finally:
            state.close()
        return 0

    return run


def _build(args: argparse.Namespace) -> int:
    from favchat.data.pipeline.build import build

    try:
        s = build(_config(args), args.input, review=args.review)
    except (ValueError, FileNotFoundError) as e:
        print(f"favchat data build: error: {e}", file=sys.stderr)
        return 2
    _print_table(s)
    pending = s["clips"] - s["clips_done"] + s.get("videos_pending", 0)
    if pending:
        print(f"{pending} clips/videos are not finished (failed API calls?); run the same command again to retry.")
    return 1 if pending else 0


def _merge(args: argparse.Namespace) -> int:
    from favchat.data.pipeline.build import merge

    _print_table(merge(args.out, args.num_shards))
    return 0


def _train(args: argparse.Namespace) -> int:
    from favchat.data.pipeline.extract import ExtractorConfig
    from favchat.data.pipeline.train_extractor import TrainExtractorConfig, train_extractor

    cfg = ExtractorConfig(backbone=args.backbone, crop_size=args.crop_size, landmarks=args.landmarks,
                          heads=tuple(args.heads))
    tcfg = TrainExtractorConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                detector=args.detector, val_fraction=args.val_fraction)
    rep = train_extractor(args.manifest, args.out, cfg, tcfg)
    if rep:
        m = rep["macro_over_supported"]
        print(f"wrote {args.out}/extractor.pt and report.md: macro precision {m['precision']:.3f}, "
              f"recall {m['recall']:.3f}, F1 {m['f1']:.3f} on {rep['num_clips']} {rep['evaluated_on']} clips")
    return 0


def _import_celebv(args: argparse.Namespace) -> int:
    from favchat.data.celebv import import_celebv

    try:
        r = import_celebv(args.info, args.videos, args.out, split=args.split, folder_fps=args.folder_fps,
                          progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"favchat data import-celebv: error: {e}", file=sys.stderr)
        return 2
    labels = ", ".join(f"{n} {g}" for g, n in r["labels"].items())
    print(f"imported {r['imported']} of {r['clips']} clips into {r['manifest']} ({labels} labels; "
          f"{r['timed_emotions']} clips with a changing emotion); {r['no_video']} without a video and "
          f"{r['unreadable']} unreadable, listed in {args.out}/missing_videos.txt.\n"
          f"Next: favchat data annotate --out {args.out} && favchat data qa --out {args.out}  (summaries and QA), or\n"
          f"      favchat data train-extractor --manifest {r['manifest']} --heads E1 --out extractor/  (E1)")
    return 0


def _review(args: argparse.Namespace) -> int:
    from favchat.data.pipeline.review import write_review

    print(write_review(args.manifest, args.out, n=args.n, seed=args.seed))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser(
        "data", help="the dataset pipeline: filter, trim, extract, annotate, qa, build, merge",
        description="Build a FaVChat-style dataset from raw facial videos (App. B): keep videos with a face, "
                    "trim them into clips, label them with the E1/E2/E3 extractors, write summaries and QA pairs. "
                    "Resumable (a rerun skips finished work and never pays an API call twice) and sharded.")
    sub = data.add_subparsers(dest="data_command", metavar="STAGE", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    def stage(name: str, help_: str, adders, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=fmt)
        _shard_args(p)
        for add in adders:
            add(p)
        p.set_defaults(func=func)
        return p

    stage("filter", "detect faces on sampled frames; keep videos with a face in >= 60%% of them",
          [_filter_args], _stage(("filter",)))
    stage("trim", "cut kept videos into 36-600-frame clips with a face throughout", [_trim_args], _stage(("trim",)))
    stage("extract", "label clips with the E1/E2/E3 extractors (every 16th frame) and map scores to features",
          [_extract_args], _stage(("extract",)))
    stage("annotate", "write a summary per clip from its frames and features (template or API)",
          [_text_args], _stage(("summary",)))
    stage("qa", "write QA pairs per summary (template or API)", [_text_args], _stage(("qa",)))
    b = stage("build", "run every stage, then write the manifest, the final table and a review",
              [_filter_args, _trim_args, _extract_args, _text_args], _build)
    b.add_argument("--source", default="unknown", help="the manifest's source field (e.g. celebv-hq)")
    b.add_argument("--split", default="train", choices=("train", "val", "test"), help="the manifest's split")
    b.add_argument("--review", type=int, default=20, help="clips in the QC review (0: none)")

    m = sub.add_parser("merge", help="join the shards' manifests and tables", formatter_class=fmt,
                       description="Join OUT/shards/*/manifest.jsonl into OUT/manifest.jsonl and sum the tables.")
    m.add_argument("--out", required=True, help="the --out folder the shards used")
    m.add_argument("--num-shards", type=int, required=True, help="the --num-shards the shards used")
    m.set_defaults(func=_merge)

    t = sub.add_parser("train-extractor", help="train the E1/E2/E3 heads from labelled manifests", formatter_class=fmt,
                       description="Train the three extractor heads on labelled clips (e.g. FaceSynth's) and "
                                   "write extractor.pt plus a per-label precision/recall report.")
    t.add_argument("--manifest", nargs="+", required=True, help="labelled manifest(s)")
    t.add_argument("--out", required=True, help="folder for extractor.pt, report.json, report.md")
    t.add_argument("--backbone", choices=("small", "efficientnet-lite0"), default="small",
                   help="small: trained 4-layer CNN (fast); efficientnet-lite0: pretrained, frozen")
    t.add_argument("--crop-size", type=int, default=0, help="face crop side (0: 64 small / 224 efficientnet)")
    t.add_argument("--landmarks", action="store_true", help="face-mesh landmark motion for E3 (needs mediapipe)")
    t.add_argument("--heads", nargs="+", choices=("E1", "E2", "E3"), default=["E1", "E2", "E3"],
                   help="the extractors to train; E1 alone on CelebV-HQ's imported labels, as in App. B.2")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--val-fraction", type=float, default=0.2, help="held out when no clip has split val/test")
    t.add_argument("--detector", default="auto", help="face detector for the crops")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_train)

    c = sub.add_parser("import-celebv", formatter_class=fmt,
                       help="CelebV-HQ's own labels into a labelled manifest and the pipeline state (no extractor)",
                       description="Map celebvhq_info.json's 83 labels into the taxonomy (timed emotions kept as "
                                   "events) for the downloaded clips; write OUT/labels.jsonl and the state from which "
                                   "`favchat data annotate` and `qa` write summaries and QA pairs (docs/datasets.md).")
    c.add_argument("--info", required=True, help="CelebV-HQ's celebvhq_info.json")
    c.add_argument("--videos", required=True, help="folder of <clip id>.mp4 (processed) or <ytb_id>.mp4 (raw) videos")
    c.add_argument("--out", required=True, help="output folder: labels.jsonl, state/, missing_videos.txt")
    c.add_argument("--split", default="train", choices=("train", "val", "test"), help="the manifest's split")
    c.add_argument("--folder-fps", type=float, default=25.0, help="frame rate of clips stored as frame folders")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_import_celebv)

    r = sub.add_parser("review", help="a markdown QC review of a random sample of a manifest", formatter_class=fmt,
                       description="Write a markdown review (frames, labels, summary, QA) of random clips.")
    r.add_argument("--manifest", required=True)
    r.add_argument("--out", required=True, help="the review's .md path")
    r.add_argument("--n", type=int, default=20, help="clips to sample")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=_review)
