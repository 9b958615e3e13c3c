"""``favchat data ...``: the dataset pipeline's subcommands (filter, trim, extract, train-extractor,
annotate, qa, build, merge, review, import-celebv), listed under ``data`` in favchat/cli.py's ``COMMANDS``.
``build`` runs every stage; each stage alone reads the state the earlier stages left in ``--out`` and skips what
is finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from favchat.cli import CommandError
from favchat.data.pipeline.train_extractor import TrainExtractorConfig


@dataclass
class ShardOptions:
    """Where the pipeline works and which shard this process runs."""

    out: str = ""
    """Output folder (state, manifest, table); shards work in OUT/shards/<i>-of-<N>/."""
    num_shards: int = 1
    """Split the videos into this many shards."""
    shard_index: int = 0
    """Which shard this process runs (0-based)."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out is required (--out DIR)")


@dataclass
class FilterOptions:
    """Face filtering of the raw videos."""

    detector: str = "auto"
    """Face detector: auto, haar, yuface or mediapipe."""
    face_threshold: float = 0.60
    """Keep a video when at least this fraction of sampled frames shows a face."""
    sample_stride: int = 16
    """Detect on every n-th frame."""
    max_samples: int = 256
    """At most this many sampled frames per video."""
    decode_max_side: int = 384
    """Frames are downscaled to this while decoding."""
    detect_max_side: int = 192
    """And to this for face detection."""
    folder_fps: float = 25.0
    """Frame rate of frame-folder videos (a folder of images, e.g. YouTube Faces), which carry none."""


@dataclass
class TrimOptions:
    """Cutting kept videos into clips."""

    min_frames: int = 36
    """Shortest clip, in frames."""
    max_frames: int = 600
    """Longest clip, in frames."""
    write_clips: bool = False
    """Also write each clip as an mp4 under OUT/clips/."""


@dataclass
class ExtractOptions:
    """Labelling clips with the E1/E2/E3 extractors."""

    extractor: str | None = None
    """Checkpoint written by `favchat data train-extractor`."""
    device: str = "auto"
    """Extractor device (auto: cuda when available)."""


@dataclass
class TextOptions:
    """Summaries and QA pairs: the offline template writer or an OpenAI-compatible chat endpoint."""

    backend: Literal["template", "api"] = "template"
    """template: offline rule-based writer; api: an OpenAI-compatible chat endpoint."""
    api_base_url: str | None = None
    """e.g. http://localhost:8000/v1 (env FAVCHAT_API_BASE_URL)."""
    api_model: str | None = None
    """Model name (env FAVCHAT_API_MODEL; default gpt-4o)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key."""
    api_concurrency: int = 4
    """Requests in flight at most."""
    api_max_retries: int = 5
    """Retries per request (errors and rejected replies)."""
    api_timeout: float = 60.0
    """Seconds per request."""
    api_backoff: float = 1.0
    """First retry wait in seconds (doubles)."""
    api_cache: str | None = None
    """Reply cache folder (None: OUT/api_cache): a rerun never pays twice."""
    usd_per_1k_prompt: float = 0.0
    """Price for the cost column."""
    usd_per_1k_completion: float = 0.0
    """Price for the cost column."""
    num_qa: int = 4
    """QA pairs per summary."""
    max_api_frames: int = 8
    """Frames sent with a summary request."""


def _paths(paths: str | list[str]) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


def _args(config: ShardOptions, *sections: Any, **extra: Any) -> SimpleNamespace:
    """The stages' flat namespace: the shard options, the sections' fields and the extra options."""
    flat = {**vars(config), "no_progress": not config.progress}
    for section in sections:
        flat |= vars(section)
    return SimpleNamespace(**flat, **extra)


def _config(args: SimpleNamespace):
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
    def run(args: SimpleNamespace) -> int:
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
        try:  # bad inputs stop the stage before anything is written
            if "filter" in stages:
                items = [it for it in discover(args.input) if shard_of(it.key, cfg.num_shards) == cfg.shard_index]
            if "extract" in stages:
                check_extractor(cfg.extractor)
        except (ValueError, FileNotFoundError) as e:
            raise CommandError(f"error: {e}") from e
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


def filter_videos(config: ShardOptions, input: str | list[str], filter: FilterOptions) -> int:
    """Detect faces on sampled frames; keep videos with a face in at least face_threshold of them.

    Args:
        input: Video files and/or folders (searched recursively): one path, or a list ('[a/, b.mp4]').
    """
    return _stage(("filter",))(_args(config, filter, input=_paths(input)))


def trim(config: ShardOptions, trim: TrimOptions) -> int:
    """Cut kept videos into clips of min_frames to max_frames frames with a face throughout."""
    return _stage(("trim",))(_args(config, trim))


def extract(config: ShardOptions, extract: ExtractOptions) -> int:
    """Label clips with the E1/E2/E3 extractors (every 16th frame) and map scores to features."""
    return _stage(("extract",))(_args(config, extract))


def annotate(config: ShardOptions, text: TextOptions) -> int:
    """Write a summary per clip from its frames and features (template or API)."""
    return _stage(("summary",))(_args(config, text))


def qa(config: ShardOptions, text: TextOptions) -> int:
    """Write QA pairs per summary (template or API)."""
    return _stage(("qa",))(_args(config, text))


def build(config: ShardOptions, input: str | list[str], filter: FilterOptions, trim: TrimOptions, extract: ExtractOptions,
          text: TextOptions, source: str = "unknown", split: Literal["train", "val", "test"] = "train",
          review: int = 20) -> int:
    """Run every stage, then write the manifest, the final table and a review.

    Builds a FaVChat-style dataset from raw facial videos (App. B). Resumable (a rerun skips finished work and
    never pays an API call twice) and sharded.

    Args:
        input: Video files and/or folders (searched recursively): one path, or a list ('[a/, b.mp4]').
        source: The manifest's source field (e.g. celebv-hq).
        split: The manifest's split.
        review: Clips in the QC review (0: none).
    """
    from favchat.data.pipeline.build import build as run

    args = _args(config, filter, trim, extract, text, input=_paths(input), source=source, split=split)
    try:
        s = run(_config(args), args.input, review=review)
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(f"error: {e}") from e
    _print_table(s)
    pending = s["clips"] - s["clips_done"] + s.get("videos_pending", 0)
    if pending:
        print(f"{pending} clips/videos are not finished (failed API calls?); run the same command again to retry.")
    return 1 if pending else 0


def merge(out: str, num_shards: int) -> int:
    """Join the shards' manifests and tables: OUT/shards/*/manifest.jsonl into OUT/manifest.jsonl.

    Args:
        out: The --out folder the shards used.
        num_shards: The --num_shards the shards used.
    """
    from favchat.data.pipeline.build import merge as run

    _print_table(run(out, num_shards))
    return 0


def train_extractor(config: TrainExtractorConfig, manifest: str | list[str], out: str,
                    backbone: Literal["small", "efficientnet-lite0"] = "small", crop_size: int = 0,
                    landmarks: bool = False, heads: tuple[Literal["E1", "E2", "E3"], ...] = ("E1", "E2", "E3")) -> int:
    """Train the E1/E2/E3 extractor heads on labelled clips (e.g. FaceSynth's).

    Writes extractor.pt plus a per-label precision/recall report (report.json, report.md).

    Args:
        manifest: Labelled manifest, or a list of them ('[a.jsonl, b.jsonl]').
        out: Folder for extractor.pt, report.json, report.md.
        backbone: small: a trained 4-layer CNN (fast); efficientnet-lite0: pretrained, frozen.
        crop_size: Face crop side (0: 64 small / 224 efficientnet).
        landmarks: Face-mesh landmark motion for E3 (needs mediapipe).
        heads: The extractors to train; E1 alone ('[E1]') on CelebV-HQ's imported labels, as in App. B.2.
    """
    from favchat.data.pipeline.extract import ExtractorConfig
    from favchat.data.pipeline.train_extractor import train_extractor as run

    cfg = ExtractorConfig(backbone=backbone, crop_size=crop_size, landmarks=landmarks, heads=tuple(heads))
    rep = run(_paths(manifest), out, cfg, config)
    if rep:
        m = rep["macro_over_supported"]
        print(f"wrote {out}/extractor.pt and report.md: macro precision {m['precision']:.3f}, "
              f"recall {m['recall']:.3f}, F1 {m['f1']:.3f} on {rep['num_clips']} {rep['evaluated_on']} clips")
    return 0


def review(manifest: str, out: str, n: int = 20, seed: int = 0) -> int:
    """Write a markdown QC review (frames, labels, summary, QA) of random clips of a manifest.

    Args:
        manifest: The manifest.
        out: The review's .md path.
        n: Clips to sample.
        seed: Sampling seed.
    """
    from favchat.data.pipeline.review import write_review

    print(write_review(manifest, out, n=n, seed=seed))
    return 0


def import_celebv(info: str, videos: str, out: str, split: Literal["train", "val", "test"] = "train",
                  folder_fps: float = 25.0, progress: bool = True) -> int:
    """CelebV-HQ's own labels into a labelled manifest and the pipeline state (no extractor).

    Maps celebvhq_info.json's 83 labels into the taxonomy (timed emotions kept as events) for the downloaded
    clips; writes OUT/labels.jsonl and the state from which `favchat data annotate` and `qa` write summaries and
    QA pairs (docs/datasets.md).

    Args:
        info: CelebV-HQ's celebvhq_info.json.
        videos: Folder of <clip id>.mp4 (processed) or <ytb_id>.mp4 (raw) videos.
        out: Output folder: labels.jsonl, state/, missing_videos.txt.
        split: The manifest's split.
        folder_fps: Frame rate of clips stored as frame folders.
        progress: A progress bar.
    """
    from favchat.data.celebv import import_celebv as run

    try:
        r = run(info, videos, out, split=split, folder_fps=folder_fps, progress=progress)
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(f"error: {e}") from e
    labels = ", ".join(f"{n} {g}" for g, n in r["labels"].items())
    print(f"imported {r['imported']} of {r['clips']} clips into {r['manifest']} ({labels} labels; "
          f"{r['timed_emotions']} clips with a changing emotion); {r['no_video']} without a video and "
          f"{r['unreadable']} unreadable, listed in {out}/missing_videos.txt.\n"
          f"Next: favchat data annotate --out {out} && favchat data qa --out {out}  (summaries and QA), or\n"
          f"      favchat data train-extractor --manifest {r['manifest']} --heads '[E1]' --out extractor/  (E1)")
    return 0
