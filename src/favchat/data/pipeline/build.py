"""Orchestration of the dataset pipeline: state, resumption, sharding, merge and the final table.

Every stage appends one JSON line per finished unit to its state file under ``<work>/state/``
(``filter``/``trim`` keyed by video id, ``extract``/``summary``/``qa`` by clip id) through
``favchat.data.manifest.ManifestWriter``: one ``write`` + ``fsync`` per line, an id already present is
skipped, and a line cut short by a kill is repaired. A rerun therefore skips every finished unit and
never writes a line twice; paid API calls are also in the chat client's disk cache. The manifest is
rebuilt from the state files at the end of every run (sorted by clip id, written atomically), so an
interrupted-then-resumed build gives the same manifest as an uninterrupted one.

Sharding: a video belongs to shard ``sha1(path relative to its input folder) % num_shards``; shard i
works in ``<out>/shards/<i>-of-<N>/`` and ``favchat data merge`` joins the shards' manifests and tables.
With one shard the work folder is ``<out>`` itself.

    favchat data build --input videos/ --out data/ --extract.extractor extractor/extractor.pt
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from favchat.data.layout import VIDEO_EXTS
from favchat.data.manifest import QA, Clip, Event, ManifestWriter, iter_lines, read_manifest
from favchat.data.pipeline.annotate import AnnotateConfig, Annotator, ClipJob
from favchat.data.pipeline.filter import REJECT_REASONS, FilterConfig, FilterResult, filter_video
from favchat.data.pipeline.trim import TrimConfig, trim_video, write_clip_file
from favchat.data.taxonomy import GROUPS, scores_to_features

log = logging.getLogger(__name__)

STAGES = ("filter", "trim", "extract", "summary", "qa")


@dataclass(frozen=True)
class VideoItem:
    id: str
    path: str  # absolute
    key: str  # path relative to its input folder: what the shard hash and the id read


def discover(inputs: Iterable[str | os.PathLike]) -> list[VideoItem]:
    """Video files given directly or found (recursively, by extension) under folders, and frame folders
    (a folder holding image files is one video, as in YouTube Faces' ``<person>/<n>/``); sorted by id."""
    from favchat.data.video import IMAGE_EXTS

    items: dict[str, VideoItem] = {}
    for inp in inputs:
        p = Path(inp)
        if p.is_dir():
            found = sorted(p.rglob("*"))
            frame_dirs = sorted({f.parent for f in found if f.is_file() and f.suffix.lower() in IMAGE_EXTS})
            files = [(f, f.name if f == p else f.relative_to(p).as_posix()) for f in frame_dirs]
            files += [(f, f.relative_to(p).as_posix()) for f in found if f.is_file() and f.suffix.lower() in VIDEO_EXTS]
        elif p.exists():
            files = [(p, p.name)]
        else:
            raise FileNotFoundError(f"input not found: {p}")
        for f, key in files:
            # A frame folder's name is often just a number: its id keeps the parent's name too.
            name = key.replace("/", "_") if f.is_dir() else f.stem
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:48] or "video"
            vid = f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
            items.setdefault(vid, VideoItem(vid, str(f.resolve()), key))
    return sorted(items.values(), key=lambda v: v.id)


def shard_of(key: str, num_shards: int) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % num_shards


@dataclass
class PipelineConfig:
    """Everything one run of ``favchat data build`` (or one of its stages) needs."""

    out: str
    filter: FilterConfig = field(default_factory=FilterConfig)
    trim: TrimConfig = field(default_factory=TrimConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    extractor: str | None = None  # checkpoint of train-extractor; needed by the extract stage
    device: str = "auto"  # extractor device: auto = cuda when available
    source: str = "unknown"  # the manifest's "source" field
    split: str = "train"
    write_clips: bool = False  # also write each clip as its own mp4 under <out>/clips/
    num_shards: int = 1
    shard_index: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"need 0 <= shard_index < num_shards, got {self.shard_index} of {self.num_shards}")

    @property
    def work(self) -> Path:
        out = Path(self.out)
        return out if self.num_shards == 1 else out / "shards" / f"{self.shard_index:03d}-of-{self.num_shards:03d}"


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    """id -> record of a state file (complete lines only)."""
    if not path.exists():
        return {}
    out = {}
    for _, line in iter_lines(path):
        d = json.loads(line)
        out[d["id"]] = d
    return out


class State:
    """The state files of one work folder; ``writers[stage].add(record)`` appends idempotently."""

    def __init__(self, work: Path):
        self.dir = work / "state"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writers = {s: ManifestWriter(self.dir / f"{s}.jsonl") for s in STAGES}
        self.records = {s: read_state(self.dir / f"{s}.jsonl") for s in STAGES}

    def add(self, stage: str, record: dict[str, Any]) -> None:
        if self.writers[stage].add(record):
            self.records[stage][record["id"]] = record

    def check_config(self, stage: str, cfg: dict[str, Any]) -> None:
        """A rerun must use the settings the stage's finished records were made with."""
        p = self.dir / f"{stage}.config.json"
        cfg = json.loads(json.dumps(cfg))  # as saved: tuples become lists
        if p.exists() and self.records[stage]:
            old = json.loads(p.read_text())
            diff = sorted(k for k in old.keys() | cfg.keys() if old.get(k) != cfg.get(k))
            if diff:
                raise ValueError(f"{p}: stage {stage!r} ran with other settings ({', '.join(diff)}); rerun with "
                                 "the same settings, or use a new --out folder")
        p.write_text(json.dumps(cfg, indent=1, sort_keys=True))

    def saved_config(self, stage: str) -> dict[str, Any]:
        p = self.dir / f"{stage}.config.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def clips(self) -> list[dict[str, Any]]:
        """Every clip of the trimmed videos, with its video record: [{id, frame_range, file, video, fps}]."""
        out = []
        for vid, rec in sorted(self.records["trim"].items()):
            fr = self.records["filter"][vid]
            out += [{**c, "video_id": vid, "source_video": fr["video"], "fps": fr["fps"]} for c in rec["clips"]]
        return out


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


# ---------------------------------------------------------------------------------------------
# Stages


def run_video_stages(cfg: PipelineConfig, items: list[VideoItem] | None, state: State,
                     stages: tuple[str, ...] = ("filter", "trim", "extract")) -> None:
    """Filter, trim and extract, one video at a time, so the extractor reuses the frames filter decoded.

    ``items=None`` takes the videos the filter state already knows (for ``trim``/``extract`` alone).
    A video whose earlier stage has not run is left for later; a finished unit is skipped.
    """
    from tqdm.auto import tqdm

    from favchat.data.faces import get_detector
    from favchat.data.pipeline.extract import (
        clip_frame_indices,
        load_extractor,
        make_clip_input,
        nearest_boxes,
        score_clips,
    )
    from favchat.data.video import VideoDecodeError, read_frames

    if "filter" in stages:
        state.check_config("filter", asdict(cfg.filter))
    if "trim" in stages:
        state.check_config("trim", {**asdict(cfg.trim), "write_clips": cfg.write_clips})
    if items is None:
        items = [VideoItem(r["id"], r["video"], r["id"]) for _, r in sorted(state.records["filter"].items())]
    detector = model = None
    if "filter" in stages and any(it.id not in state.records["filter"] for it in items):
        detector = get_detector(cfg.filter.detector)
    if "extract" in stages:
        todo = [c for c in state.clips() if c["id"] not in state.records["extract"]]
        if todo or any(it.id not in state.records["trim"] for it in items):
            check_extractor(cfg.extractor)
            model = load_extractor(cfg.extractor, _device(cfg.device))
            digest = hashlib.sha256(Path(cfg.extractor).read_bytes()).hexdigest()[:16]
            state.check_config("extract", {"extractor_sha256": digest, **asdict(model.cfg)})
    # Frames decoded for extract must match the filter's (its boxes are normalised, its frames reused).
    decode_side = state.saved_config("filter").get("decode_max_side", cfg.filter.decode_max_side)
    for it in tqdm(items, desc="videos", unit="video", disable=not cfg.progress):
        fr_d = state.records["filter"].get(it.id)
        frames = None  # (K, H, W, 3) sampled frames when filter decoded them in this run
        if fr_d is None:
            if "filter" not in stages:
                continue
            fr, frames = filter_video(it.path, it.id, cfg.filter, detector)
            state.add("filter", fr.to_json())
        else:
            fr = FilterResult.from_json(fr_d)
        if it.id not in state.records["trim"]:
            if "trim" not in stages:
                continue
            clips = trim_video(fr, cfg.trim)
            for c in clips:
                c["file"] = None
                if cfg.write_clips:
                    path = Path(cfg.out) / "clips" / f"{c['id']}.mp4"
                    c["file"] = str(write_clip_file(fr.video, tuple(c["frame_range"]), fr.fps, path).resolve())
            state.add("trim", {"id": it.id, "clips": clips})
        if model is None:
            continue
        todo = [c for c in state.records["trim"][it.id]["clips"] if c["id"] not in state.records["extract"]]
        inputs, done = [], []
        pos = {s: k for k, s in enumerate(fr.sampled)}  # frame index -> row of ``frames``
        for c in todo:
            idx = clip_frame_indices(*c["frame_range"], model.cfg)
            boxes = nearest_boxes(idx, fr.sampled, fr.boxes)
            try:
                clip_frames = (frames[[pos[i] for i in idx]] if frames is not None and all(i in pos for i in idx)
                               else read_frames(fr.video, idx, max_side=decode_side))
            except VideoDecodeError as e:
                log.warning("clip %s: %s", c["id"], e)  # left unlabelled; reported as pending
                continue
            inputs.append(make_clip_input(clip_frames, boxes, model.cfg))
            done.append(c)
        for c, scores in zip(done, score_clips(model, inputs) if inputs else [], strict=True):
            state.add("extract", {"id": c["id"], "scores": scores,
                                  "features": scores_to_features(scores, model.cfg.threshold)})


def _job(c: dict[str, Any], extracted: dict[str, Any]) -> ClipJob:
    return ClipJob(c["id"], c["source_video"], tuple(c["frame_range"]), c["fps"], extracted["features"],
                   extracted.get("events", []))


def run_text_stages(cfg: PipelineConfig, state: State, stages: tuple[str, ...] = ("summary", "qa")) -> Annotator:
    """Summaries, then QA pairs, for every labelled clip that lacks them; returns the annotator (API usage)."""
    from tqdm.auto import tqdm

    from favchat.chat_api import ChatAPIError
    from favchat.data.video import VideoDecodeError

    acfg = cfg.annotate
    api_key = {"backend": acfg.backend, **({"base_url": acfg.api.base_url, "model": acfg.api.model,
                                             "temperature": acfg.api.temperature} if acfg.backend == "api" else {})}
    for stage in stages:
        state.check_config(stage, {**api_key, "num_qa": acfg.num_qa} if stage == "qa" else
                           {**api_key, "min_summary_words": acfg.min_summary_words, "max_frames": acfg.max_frames,
                            "frame_side": acfg.frame_side, "check_contradictions": acfg.check_contradictions})
    ann = Annotator(acfg)
    clips = {c["id"]: c for c in state.clips()}
    if "summary" in stages:
        jobs = [_job(clips[i], r) for i, r in sorted(state.records["extract"].items())
                if i not in state.records["summary"]]
        bar = tqdm(total=len(jobs), desc="summaries", unit="clip", disable=not cfg.progress)
        for job, res in ann.run(jobs, ann.summarize):
            bar.update()
            if isinstance(res, ChatAPIError | VideoDecodeError):
                log.warning("summary of %s failed (a rerun retries it): %s", job.id, res)
                continue
            state.add("summary", {"id": job.id, "summary": res})
        bar.close()
    if "qa" in stages:
        jobs = [(_job(clips[i], state.records["extract"][i]), r["summary"])
                for i, r in sorted(state.records["summary"].items()) if i not in state.records["qa"]]
        bar = tqdm(total=len(jobs), desc="QA pairs", unit="clip", disable=not cfg.progress)
        for (job, _), res in ann.run(jobs, lambda js: ann.qa(*js)):
            bar.update()
            if isinstance(res, ChatAPIError | VideoDecodeError):
                log.warning("QA of %s failed (a rerun retries it): %s", job.id, res)
                continue
            state.add("qa", {"id": job.id, "qa": [asdict(q) for q in res]})
        bar.close()
    return ann


# ---------------------------------------------------------------------------------------------
# Manifest and table


def write_manifest(cfg: PipelineConfig, state: State) -> Path:
    """Rebuild ``<work>/manifest.jsonl`` from the state: every clip with labels, summary and QA, by id."""
    path = cfg.work / "manifest.jsonl"
    lines = []
    for c in sorted(state.clips(), key=lambda c: c["id"]):
        cid = c["id"]
        if cid not in state.records["qa"]:
            continue
        s, e = c["frame_range"]
        fr = state.records["filter"][c["video_id"]]
        # Labels imported from a labelled set (favchat.data.celebv) carry their source, split, timed events
        # and meta in the extract record; extracted labels take the run's settings.
        ex = state.records["extract"][cid]
        clip = Clip(
            id=cid, video=c["file"] or c["source_video"], frame_range=(0, e - s) if c["file"] else (s, e),
            fps=c["fps"], source=ex.get("source", cfg.source), split=ex.get("split", cfg.split), labels=ex["features"],
            summary=state.records["summary"][cid]["summary"], qa=[QA(**q) for q in state.records["qa"][cid]["qa"]],
            events=[Event(**ev) for ev in ex.get("events", [])],
            meta={"source_video": c["source_video"], "source_range": [s, e], "face_fraction": fr["face_fraction"],
                  **ex.get("meta", {})},
        )
        lines.append(json.dumps(clip.to_json(), ensure_ascii=False) + "\n")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def stats(state: State, expected_videos: int | None = None) -> dict[str, Any]:
    """The final table's numbers, from the state files alone."""
    f = state.records["filter"].values()
    reasons = Counter(r["reason"] for r in f if not r["kept"])
    extract = state.records["extract"].values()
    labels = [n for r in extract for g in GROUPS for n in r["features"][g]]
    n_clips = sum(len(r["clips"]) for r in state.records["trim"].values())
    out = {
        "videos_in": len(f), "kept": sum(r["kept"] for r in f), "rejected": sum(reasons.values()),
        "rejected_by_reason": {k: reasons.get(k, 0) for k in REJECT_REASONS},
        "clips": n_clips, "labelled_clips": len(extract), "labels": len(labels), "distinct_labels": len(set(labels)),
        "summaries": len(state.records["summary"]),
        "qa_pairs": sum(len(r["qa"]) for r in state.records["qa"].values()),
        "clips_done": len(state.records["qa"]),
    }
    if expected_videos is not None:
        out["videos_pending"] = expected_videos - len(f)
    return out


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            if isinstance(v, dict):
                sub = out.setdefault(k, {})
                for kk, vv in v.items():
                    sub[kk] = sub.get(kk, 0) + vv
            elif k != "distinct_labels":
                out[k] = out.get(k, 0) + v
    return out


def format_table(s: dict[str, Any]) -> str:
    rows = [("videos in", s["videos_in"]), ("  kept", s["kept"]), ("  rejected", s["rejected"])]
    rows += [(f"    {k}", v) for k, v in s["rejected_by_reason"].items()]
    rows += [("clips", s["clips"]), ("labelled clips", s["labelled_clips"]), ("labels (clip x label)", s["labels"])]
    if "distinct_labels" in s:
        rows.append(("distinct labels", s["distinct_labels"]))
    rows += [("summaries", s["summaries"]), ("QA pairs", s["qa_pairs"]),
             ("clips pending", s["clips"] - s["clips_done"])]
    if s.get("videos_pending"):
        rows.append(("videos pending", s["videos_pending"]))
    if "api" in s:
        a = s["api"]
        rows += [("API calls", a["calls"]), ("API cached", a["cached"]), ("API failed", a["failed"]),
                 ("API tokens in/out", f"{a['prompt_tokens']}/{a['completion_tokens']}"), ("API cost USD", f"{a['usd']:.4f}")]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v:>8}" for k, v in rows)


def finish(cfg: PipelineConfig, state: State, ann: Annotator | None = None, expected: int | None = None,
           review: int = 0) -> dict[str, Any]:
    path = write_manifest(cfg, state)
    s = stats(state, expected)
    if ann is not None and ann.client is not None:
        s["api"] = asdict(ann.client.usage)
    (cfg.work / "stats.json").write_text(json.dumps(s, indent=1))
    if review:
        from favchat.data.pipeline.review import write_review

        write_review(path, cfg.work / "review.md", n=review)
    return s


NO_EXTRACTOR = (
    "the extract stage labels clips with a trained extractor: pass --extract.extractor PATH. Get one by training "
    "it on labelled clips (favchat data train-extractor --manifest LABELLED.jsonl --out extractor/, e.g. on CelebV-HQ's "
    "labels imported by favchat data import-celebv, or on FaceSynth's); or, for a set that comes with labels, "
    "import them instead of extracting (favchat data import-celebv --info celebvhq_info.json --videos DIR --out "
    "OUT, then favchat data annotate --out OUT and favchat data qa --out OUT). See docs/datasets.md.")


def check_extractor(extractor: str | None) -> None:
    """Stop before any work when the extract stage would have no extractor checkpoint to load."""
    if not extractor:
        raise ValueError(NO_EXTRACTOR)
    if not Path(extractor).is_file():
        raise FileNotFoundError(f"extractor checkpoint not found: {extractor} ({NO_EXTRACTOR})")


def build(cfg: PipelineConfig, inputs: list[str], review: int = 20) -> dict[str, Any]:
    """Run every stage on this shard's videos; return the final table's numbers."""
    check_extractor(cfg.extractor)
    items = [it for it in discover(inputs) if shard_of(it.key, cfg.num_shards) == cfg.shard_index]
    state = State(cfg.work)
    try:
        run_video_stages(cfg, items, state)
        ann = run_text_stages(cfg, state)
        return finish(cfg, state, ann, expected=len(items), review=review)
    finally:
        state.close()


def merge(out: str | Path, num_shards: int) -> dict[str, Any]:
    """Join the shards' manifests into ``<out>/manifest.jsonl`` and their tables into ``<out>/stats.json``."""
    out = Path(out)
    dirs = [out / "shards" / f"{i:03d}-of-{num_shards:03d}" for i in range(num_shards)]
    missing = [str(d) for d in dirs if not (d / "manifest.jsonl").exists()]
    if missing:
        raise FileNotFoundError(f"shards without a manifest (run their build first): {missing}")
    clips = sorted((c for d in dirs for c in read_manifest(d / "manifest.jsonl", check_videos=False)),
                   key=lambda c: c.id)
    dup = [k for k, n in Counter(c.id for c in clips).items() if n > 1]
    if dup:
        raise ValueError(f"clip ids in more than one shard: {dup[:10]}")
    path = out / "manifest.jsonl"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in clips), encoding="utf-8")
    os.replace(tmp, path)
    parts = [json.loads((d / "stats.json").read_text()) for d in dirs]
    s = merge_stats(parts)
    s["distinct_labels"] = len({n for c in clips for n in c.all_labels})
    (out / "stats.json").write_text(json.dumps(s, indent=1))
    return s
