"""``favchat demo``: the whole system, end to end, on a laptop CPU.

    favchat demo            # ~15 min on 2 CPU cores
    favchat demo --quick    # under 3 min: the same steps at smoke-test scale (what CI runs)

1. Generate FaceSynth clips (procedural facial videos with exact labels; held-out identities in test).
2. The facial encoder (ImageNet EfficientNet-Lite0) gets its face-task pretraining on the training clips'
   labels (``favchat.train.face_pretrain``: what FaceXFormer's encoder brings in the paper). Stage 0 teaches
   the from-scratch tiny LLM to answer from label phrases put in the video slots (see train/config.py), so
   that the visual levels have a reader to write for; then stages 1, 2 and 3 train with
   the paper's freezing schedule, except that the pretrained facial encoder stays frozen (the recipe's
   ``schedule``), each from the previous one's checkpoint, and with a slot loss that pulls the video tokens
   toward the clip's label phrases (the recipe's ``slot_loss_weight``).
3. Evaluate on the held-out test split: answer accuracy per question group (attribute, action, emotion,
   yes/no; read through the taxonomy lexicon) and CIDEr / ROUGE-L of the descriptions.
4. Write a report folder (metrics.json, report.md, loss and adapter-weight curves) and answer one
   question about one held-out video.

The recipe lives in ``favchat/configs/demo.yaml`` (``demo_quick.yaml`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from favchat.data.synth.generate import SynthConfig
    from favchat.train.config import TrainConfig
    from favchat.train.face_pretrain import FacePretrainConfig

log = logging.getLogger("favchat.demo")


@dataclass
class SynthSection:
    n: int = 480
    seed: int = 0
    min_frames: int = 16
    max_frames: int = 24
    min_size: int = 64
    max_size: int = 80
    workers: int = 2


@dataclass
class StageSection:
    max_steps: int = 100
    lr: float = 1e-3
    batch_size: int = 8
    # stages 1-3: weight of the slot loss (TrainConfig.slot_loss_weight)
    slot_loss_weight: float = 0.0
    # stage 0: noise on the phrases in the slots (TrainConfig.slot_noise)
    slot_noise: float = 0.0


@dataclass
class FacePretrainSection:
    max_steps: int = 200
    lr: float = 1e-3
    batch_size: int = 32
    # per-frame loss on the clips' timed events (FacePretrainConfig.event_loss_weight; 0: off)
    event_loss_weight: float = 0.0


@dataclass
class EvalSection:
    max_new_tokens: int = 48
    max_clips: int = 80  # the first N clips of the split (sorted by id); all their QA pairs are asked
    split: Literal["test", "val"] = "test"  # tune a recipe on "val"; report "test" (held-out identities both)


@dataclass
class DemoConfig:
    synth: SynthSection = field(default_factory=SynthSection)
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    face_pretrain: FacePretrainSection | None = None  # the facial encoder's task pretraining before the stages
    stages: dict[int, StageSection] = field(default_factory=dict)
    # per-stage trainable components replacing docs/design.md §2's defaults (train/config.py) for the stages named
    schedule: dict[int, list[str]] = field(default_factory=dict)
    # stage 0 gives each label a video slot of its own (TrainConfig.label_slots); needs a stage 0
    label_slots: bool = False
    # the training seed of the facial encoder's pretraining and of every stage (initialisation, data order);
    # synth.seed draws the clips. Another seed measures how far one recipe's figures move from run to run.
    seed: int = 0
    eval: EvalSection = field(default_factory=EvalSection)

    def __post_init__(self) -> None:
        if sorted(self.stages) not in ([1, 2, 3], [0, 1, 2, 3]):
            raise ValueError(f"stages must configure 1, 2 and 3 (and optionally 0), got {sorted(self.stages)}")
        if not set(self.schedule) <= set(self.stages):
            raise ValueError(f"schedule names stages {sorted(set(self.schedule) - set(self.stages))} "
                             "that the recipe does not run")
        if self.label_slots and 0 not in self.stages:
            raise ValueError("label_slots lays out the video slots in stage 0: configure stage 0")
        # Every run's config is built now, so that any bad value stops the demo before it generates or trains
        # anything (the output folder checks nothing; run_demo resolves the runs for its own).
        self.runs(".")

    def runs(self, out: str | Path) -> DemoRuns:
        """The config of every run the recipe makes with ``out`` as its output folder: the clips, the facial
        encoder's pretraining, then each stage from the previous run's ``final/`` checkpoint. A bad value raises
        ``ValueError`` naming the recipe's key."""
        from favchat.config_io import ConfigError, from_dict
        from favchat.data.synth.generate import SynthConfig
        from favchat.model.configuration import FaVChatConfig
        from favchat.train.config import DEFAULT_SCHEDULE, TrainConfig
        from favchat.train.face_pretrain import FacePretrainConfig

        def build(key: str, cls: type, data: dict[str, Any]) -> Any:
            try:
                return from_dict(cls, data)
            except ConfigError as e:
                raise ValueError(f"{key}: {e}") from None

        out = Path(out)
        s = self.synth
        synth = build("synth", SynthConfig, {"seed": s.seed, "min_frames": s.min_frames, "max_frames": s.max_frames,
                                             "min_size": s.min_size, "max_size": s.max_size})
        manifest = out / "data" / "manifest.jsonl"  # what FaceSynth's generate writes under out/data
        data = {"train_manifest": str(manifest), "cache_videos": True}
        face_pretrain, init = None, None
        if self.face_pretrain is not None:
            fp = self.face_pretrain
            face_pretrain = build("face_pretrain", FacePretrainConfig, {
                "output_dir": str(out / "face_pretrain"), "model": self.model, "seed": self.seed, "data": data,
                "optim": {"lr": fp.lr, "max_steps": fp.max_steps, "batch_size": fp.batch_size,
                          "warmup_steps": max(1, fp.max_steps // 20)},
                "event_loss_weight": fp.event_loss_weight, "log_every": max(1, fp.max_steps // 10),
            })
            init = str(out / "face_pretrain" / "final")
        schedule = {k: list(v) for k, v in DEFAULT_SCHEDULE.items()} | {k: list(v) for k, v in self.schedule.items()}
        stages = {}
        for stage in sorted(self.stages):
            st = self.stages[stage]
            stages[stage] = build(f"stages.{stage}", TrainConfig, {
                "stage": stage, "output_dir": str(out / f"stage{stage}"), "init_from": init, "seed": self.seed,
                "model": self.model, "data": data, "tensorboard": False, "schedule": schedule,
                "label_slots": self.label_slots and stage == 0, "slot_loss_weight": st.slot_loss_weight,
                "slot_noise": st.slot_noise,
                "cache_frozen_towers": True,  # small towers and clips: every clip's frames and frozen states fit in memory
                "optim": {"lr": st.lr, "max_steps": st.max_steps, "batch_size": st.batch_size, "scheduler": "cosine",
                          "warmup_steps": max(1, st.max_steps // 20)},
                "log_every": max(1, st.max_steps // 10), "save_every": st.max_steps, "keep_checkpoints": 1,
            })
            init = str(out / f"stage{stage}" / "final")
        # the first run builds the model from the preset: its overrides are checked here, not after the clips
        model = (face_pretrain or stages[min(stages)]).model
        try:
            FaVChatConfig.from_preset(model.preset, **model.overrides)
        except TypeError as e:
            raise ValueError(f"model.overrides: a value of the wrong type ({e})") from None
        except ValueError as e:
            raise ValueError(f"model: {e}") from None
        return DemoRuns(synth, manifest, face_pretrain, stages)


@dataclass
class DemoRuns:
    """What a recipe runs, resolved for one output folder (``DemoConfig.runs``)."""

    synth: SynthConfig
    manifest: Path  # the clips' manifest that generation writes and every run reads
    face_pretrain: FacePretrainConfig | None
    stages: dict[int, TrainConfig]


def load_demo_config(quick: bool, path: str | None = None, overrides: list[str] | None = None) -> DemoConfig:
    from favchat.config_io import load_config

    if path is None:
        name = "demo_quick.yaml" if quick else "demo.yaml"
        path = str(resources.files("favchat") / "configs" / name)
    return load_config(DemoConfig, path, overrides or [])


def run_demo(out: str | Path, cfg: DemoConfig, progress: bool = True) -> dict[str, Any]:
    from favchat.data.datasets import VideoCache
    from favchat.data.synth.generate import generate
    from favchat.train.face_pretrain import pretrain_face
    from favchat.train.metrics_log import plot_curves
    from favchat.train.trainer import train

    out = Path(out)
    plan = cfg.runs(out)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    manifest = generate(plan.synth, n=cfg.synth.n, out=plan.manifest.parent, workers=cfg.synth.workers,
                        progress=progress)
    timings["synth_s"] = time.perf_counter() - t

    runs: dict[str, Path] = {}
    # each clip decoded (and its face found) once for the pretraining and every stage, not once per run
    videos = VideoCache()
    if plan.face_pretrain is not None:
        t = time.perf_counter()
        pretrain_face(plan.face_pretrain, progress=progress, video_cache=videos)
        timings["face_pretrain_s"] = time.perf_counter() - t
        runs["facial encoder"] = out / "face_pretrain" / "metrics.csv"
    for stage, tcfg in plan.stages.items():
        t = time.perf_counter()
        init = train(tcfg, video_cache=videos).final_dir
        timings[f"stage{stage}_s"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics = evaluate_facesynth(init, manifest, out / "eval", cfg.eval, progress=progress)
    timings["eval_s"] = time.perf_counter() - t
    metrics["timings"] = timings
    metrics["checkpoint"] = str(init)
    if cfg.face_pretrain is not None:
        metrics["face_pretrain"] = json.loads((out / "face_pretrain" / "report.json").read_text()).get("val")

    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    runs |= {f"stage {k}": out / f"stage{k}" / "metrics.csv" for k in sorted(cfg.stages)}
    plot_curves(runs, report / "loss.png", keys=("loss",), title="training loss per stage")
    plot_curves(runs, report / "adapter_weights.png", keys=("w_g", "w_f"), title="adapter weights (general, facial)")
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (report / "report.md").write_text(render_report(metrics))
    return metrics


def evaluate_facesynth(checkpoint: Path, manifest: Path, out: Path, ecfg: EvalSection,
                       progress: bool = True) -> dict[str, Any]:
    """Held-out QA accuracy per group and description CIDEr / ROUGE-L, plus one example answer, on the
    ``ecfg.split`` clips (test by default; val to tune a recipe without touching test)."""
    from favchat.data.manifest import WORDINGS, read_manifest
    from favchat.eval import metrics as M
    from favchat.eval.predict import ModelPredictor, Request, VideoRef, predict
    from favchat.eval.qa_accuracy import SCORED_TYPES, QAItem, accuracy_by_type, blind_answers

    clips = sorted(read_manifest(manifest, split=ecfg.split), key=lambda c: c.id)[: ecfg.max_clips]
    if not clips:
        raise ValueError(f"{manifest}: no {ecfg.split} clips")
    predictor = ModelPredictor(checkpoint, max_new_tokens=ecfg.max_new_tokens)
    requests = []
    for c in clips:
        video = VideoRef(c.video_path, c.frame_range)
        for k, qa in enumerate(c.qa):
            if qa.type in SCORED_TYPES or qa.type == "description":
                rid = f"{c.id}#qa{k}"
                requests.append(Request(rid, video, qa.question, {"type": qa.type, "reference": qa.answer,
                                                                  "wording": qa.wording}))
    preds = predict(predictor, requests, out / "predictions.jsonl", desc="test QA", progress=progress)
    items = [QAItem(r.id, r.extra["type"], r.question, r.extra["reference"], preds[r.id]["answer"])
             for r in requests if r.extra["type"] in SCORED_TYPES]
    acc = accuracy_by_type(items)
    # Test clips ask each question in a wording training uses and in one it never sees (favchat.data.questions)
    wording = {r.id: r.extra["wording"] for r in requests}
    by_wording = {w: accuracy_by_type(it for it in items if wording[it.id] == w) for w in WORDINGS
                  if any(wording[it.id] == w for it in items)}
    by_question, by_type = blind_answers(read_manifest(manifest, split="train"))
    blind = accuracy_by_type(QAItem(it.id, it.type, it.question, it.reference,
                                    by_question.get(it.question, by_type.get(it.type, ""))) for it in items)
    desc = [r for r in requests if r.extra["type"] == "description"]
    refs = {r.id: [r.extra["reference"]] for r in desc}
    hyps = {r.id: preds[r.id]["answer"] for r in desc}
    captions = {"n": len(desc), "cider": M.cider(refs, hyps), "rouge_l": M.rouge_l(refs, hyps)} if desc else {}
    example_clip = clips[0]
    question = "Give a detailed description of the video."  # a question of a type the model trained on
    example = {"clip": example_clip.id, "video": str(example_clip.video_path), "question": question,
               "answer": predictor(VideoRef(example_clip.video_path, example_clip.frame_range), question),
               "ground_truth": example_clip.labels}
    return {"split": ecfg.split, "clips": len(clips), "accuracy": acc, "accuracy_by_wording": by_wording,
            "blind_baseline": blind, "captions": captions, "example": example}


def render_report(m: dict[str, Any]) -> str:
    lines = ["# FaVChat demo report", "",
             f"Checkpoint: `{m['checkpoint']}`; held-out {m['split']} clips: {m['clips']}.",
             "", "## Answer accuracy on held-out identities", "",
             "Blind baseline: the answer most often given to the same question in the training clips, whatever "
             "the video. Above it, the model reads the video.", "",
             "| question type | accuracy | blind baseline | n |", "|---|---|---|---|"]
    for t, v in m["accuracy"].items():
        lines.append(f"| {t} | {100 * v['accuracy']:.1f}% | {100 * m['blind_baseline'][t]['accuracy']:.1f}% | {v['n']} |")
    wordings = m.get("accuracy_by_wording", {})
    if "unseen" in wordings:
        seen, unseen = wordings.get("seen", {}), wordings["unseen"]
        lines += ["", "### Seen and unseen wordings", "",
                  "Each test question is asked twice: in a wording training uses and in one it never sees "
                  "(docs/facesynth.md, \"Question wording\").", "",
                  "| question type | seen wordings | unseen wordings | unseen - seen | n (each) |", "|---|---|---|---|---|"]
        for t, u in unseen.items():
            t_seen = seen.get(t)
            cells = (f"{100 * t_seen['accuracy']:.1f}% | {100 * u['accuracy']:.1f}% | "
                     f"{100 * (u['accuracy'] - t_seen['accuracy']):+.1f} pts") if t_seen else f"- | {100 * u['accuracy']:.1f}% | -"
            lines.append(f"| {t} | {cells} | {u['n']} |")
    if m["captions"]:
        c = m["captions"]
        lines += ["", "## Descriptions", "", "| CIDEr | ROUGE-L | n |", "|---|---|---|",
                  f"| {c['cider']:.3f} | {c['rouge_l']:.3f} | {c['n']} |"]
    if m.get("face_pretrain"):
        lines += ["", "## Facial encoder pretraining (its label heads on the val split)", "",
                  "| labels | accuracy |", "|---|---|"]
        lines += [f"| {k} | {100 * v:.1f}% |" for k, v in m["face_pretrain"].items()]
    e = m["example"]
    lines += ["", "## Example", "", f"Video `{e['video']}` (clip {e['clip']}), ground truth {e['ground_truth']}.", "",
              f"Q: {e['question']}", "", f"A: {e['answer']}", "", "## Time", ""]
    lines += [f"- {k}: {v:.1f} s" for k, v in m["timings"].items()]
    lines += ["", "Curves: `loss.png`, `adapter_weights.png`."]
    return "\n".join(lines) + "\n"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate FaceSynth, train stages 0-3, evaluate on held-out videos, write a report",
        description="The whole system end to end on a CPU: FaceSynth data, the training stages, a held-out "
                    "evaluation and a report folder. About 15 minutes on 2 cores; --quick: under 3.",
        epilog="Any key of the recipe (favchat/configs/demo.yaml) can be overridden on the command line, "
               "e.g. --stages.2.max_steps 600 --eval.split val (tune on val; report test).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", help="output folder")
    p.add_argument("--quick", action="store_true", help="smoke-test scale (under 3 minutes)")
    p.add_argument("--config", help="a demo recipe YAML instead of the packaged one")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args: argparse.Namespace) -> int:
    import sys

    from favchat.config_io import ConfigError

    try:
        cfg = load_demo_config(args.quick, args.config, list(args.overrides))
    except ConfigError as e:
        print(f"favchat demo: bad config: {e}", file=sys.stderr)
        return 2
    m = run_demo(args.out, cfg, progress=not args.no_progress)
    print()
    print(render_report(m))
    print(f"report: {Path(args.out) / 'report'}")
    return 0
