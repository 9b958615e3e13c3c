"""``favchat demo``: the whole system, end to end, on a laptop CPU.

    favchat demo            # ~21 min on 2 CPU cores
    favchat demo --quick    # under 3 min: the same steps at smoke-test scale (what CI runs)

1. Generate FaceSynth clips (procedural facial videos with exact labels; held-out identities in test).
2. Train: the facial encoder's face-task pretraining (``favchat.train.face_pretrain``), then stages 0-3 of the
   recipe (``favchat.recipes.tiny_demo``: stage 0 teaches the from-scratch tiny LLM to read label phrases in its
   video slots; stages 1-3 follow the paper's freezing schedule with the recipe's slot loss), each from the
   previous run's checkpoint; then DE-GRPO (``favchat.rl``) from stage 3's.
3. Evaluate stage 3's model and the RL policy on the held-out test split: answer accuracy per question group
   (attribute, action, emotion, yes/no; read through the taxonomy lexicon) and CIDEr / ROUGE-L of the
   descriptions; the RL run's held-out facial reward per round.
4. Write a report folder (metrics.json, report.md, loss and adapter-weight curves) and answer one
   question about one held-out video.

The recipe is ``favchat/configs/demo.yaml`` (``demo_quick.yaml`` for ``--quick``): the complete config of
every run, shared values by YAML anchors. This runner only chains them: it resolves every run's paths against
``out`` and gives every run the recipe's ``seed``.

Run again with the same command, the demo keeps every step that finished with the same config, resumes an
interrupted training stage or RL run from its last checkpoint (``save_every``) and an interrupted FaceSynth
generation from its last clip; a changed config reruns from the first step it changes, and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from favchat.data.synth.generate import SynthConfig
from favchat.recipes.tiny_demo.config import DemoStageConfig
from favchat.rl.config import RLConfig
from favchat.train.config import DataSection, FacePretrainConfig

log = logging.getLogger("favchat.demo")
RECIPES = resources.files("favchat") / "configs"


@dataclass
class EvalSection:
    """The held-out evaluation."""

    max_new_tokens: int = 48
    """Longest answer generated."""
    max_clips: int = 80
    """The first N clips of the split (sorted by id); all their QA pairs are asked."""
    split: Literal["test", "val"] = "test"
    """Tune a recipe on val; report test (held-out identities both)."""


@dataclass
class DemoConfig:
    """The demo's recipe: the clips, then each run's complete config, then the evaluation."""

    out: str = "runs/demo"
    """Output folder; every run's paths (output_dir, init_from, data.train_manifest) are relative to it."""
    seed: int = 0
    """The training seed of every run (initialisation, data order); synth.seed draws the clips."""
    clips: int = 480
    """FaceSynth clips to generate."""
    workers: int = 2
    """Processes that generate the clips."""
    synth: SynthConfig = field(default_factory=SynthConfig)
    """The clips."""
    face_pretrain: FacePretrainConfig = field(default_factory=lambda: FacePretrainConfig(
        output_dir="face_pretrain", data=DataSection(train_manifest="data/manifest.jsonl", cache_videos=True)))
    """The facial encoder's task pretraining, before the stages."""
    stages: dict[int, DemoStageConfig] = field(default_factory=dict)
    """The training stages by number (1-3, and optionally 0), run in order; each stage's fields are listed below."""
    rl: RLConfig = field(default_factory=RLConfig)
    """DE-GRPO (or GRPO) after stage 3, favchat rl's options: it starts from stage 3's final/ (leave model_path
    unset); its manifests and output_dir are relative to out; num_rounds 0: no RL."""
    eval: EvalSection = field(default_factory=EvalSection)
    """The held-out evaluation (of stage 3's model, and of the RL policy after it)."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self) -> None:
        if sorted(self.stages) not in ([1, 2, 3], [0, 1, 2, 3]):
            raise ValueError(f"stages must configure 1, 2 and 3 (and optionally 0), got {sorted(self.stages)}")
        for k, st in self.stages.items():
            if st.stage != k:
                raise ValueError(f"stages.{k} trains stage {st.stage}: set stages.{k}.stage: {k}")
        try:  # the first run builds the model from the preset: its overrides are checked here, not after the clips
            from favchat.model.presets import preset_config

            preset_config(self.face_pretrain.model.preset, **self.face_pretrain.model.overrides)
        except TypeError as e:
            raise ValueError(f"model.overrides: a value of the wrong type ({e})") from None
        except ValueError as e:
            raise ValueError(f"model: {e}") from None
        if self.rl.model_path is not None:
            raise ValueError("rl.model_path: the demo's RL starts from stage 3's final/; leave it unset")

    def runs(self) -> list[FacePretrainConfig | DemoStageConfig]:
        """Every run's config with its paths under ``out`` and the recipe's seed, in the order they run."""
        def place(path: str | None) -> str | None:
            return None if path is None else str(Path(self.out) / path)

        runs = []
        for cfg in [self.face_pretrain] + [self.stages[k] for k in sorted(self.stages)]:
            data = {**cfg.data.__dict__, "train_manifest": place(cfg.data.train_manifest),
                    "val_manifest": place(cfg.data.val_manifest)}
            runs.append(type(cfg)(**{**cfg.__dict__, "output_dir": place(cfg.output_dir),
                                     "init_from": place(cfg.init_from), "seed": self.seed,
                                     "data": type(cfg.data)(**data)}))
        return runs

    def rl_run(self) -> RLConfig | None:
        """The RL run's config with its paths under ``out``, from the last stage's final/, with the recipe's seed
        (None when ``rl.num_rounds`` is 0)."""
        if not self.rl.num_rounds:
            return None
        out, last = Path(self.out), Path(self.stages[3].output_dir)
        return replace(self.rl, model_path=str(out / last / "final"), output_dir=str(out / self.rl.output_dir),
                       train_manifest=self.rl.train_manifest and str(out / self.rl.train_manifest),
                       eval_manifest=self.rl.eval_manifest and str(out / self.rl.eval_manifest), seed=self.seed)


def recipe_cli(name: str, quick_help: str, stage_help: bool = True) -> tuple[Callable[[Any], None],
                                                                           Callable[[list[str]], list[str]]]:
    """The parser changes of a command that runs a packaged recipe (``favchat demo``, ``favchat experiment
    ablations``): favchat/configs/<name>.yaml as its defaults, ``--quick`` as ``--config <name>_quick.yaml`` read
    where it stands, and (``stage_help``) the stages' fields listed in ``--help``. Returns ``(cli_setup,
    cli_argv)``."""

    def setup(parser) -> None:
        from favchat.config import config_parser

        parser.default_config_files = [str(RECIPES / f"{name}.yaml")]
        parser.add_argument("--quick", action="store_true",
                            help=f"the smoke-test recipe favchat/configs/{name}_quick.yaml ({quick_help}), read "
                                 "where --quick stands: options after it override it")
        if not stage_help:
            return
        # The stages are a dict (stage number -> its config): list a stage's options too, as --stages.K.<field>.
        stage = config_parser(DemoStageConfig).format_help()
        stage = stage[stage.index("\n  --stage "):].replace("\n  --", "\n  --stages.K.").replace(", --", ", --stages.K.")
        own = parser.format_help
        parser.format_help = lambda: (f"{own()}\nEach stage K of stages (0-3), e.g. --stages.2.optim.lr 1e-3; defaults "
                                      f"are DemoStageConfig's, the recipe's values are in the YAML:{stage}")

    def argv(args: list[str]) -> list[str]:
        quick = ["--config", str(RECIPES / f"{name}_quick.yaml")]
        return [a for arg in args for a in (quick if arg == "--quick" else [arg])]

    return setup, argv


def load_recipe(args: Sequence[str] = (), command: Callable[..., int] | None = None) -> DemoConfig:
    """The recipe ``favchat demo ARGS`` runs (the packaged one, then --quick / --config / options); a bad value
    anywhere raises ``ConfigError`` naming it. ``command``: another recipe command (favchat experiment
    ablations), whose config class and packaged recipe are read instead."""
    import typing

    from favchat.cli import command_parser
    from favchat.config import ConfigError, build

    command = command or demo
    parser = command_parser(f"favchat {command.__name__}", command)
    try:
        namespace = parser.parse_args(command.cli_argv(list(args)))
    except Exception as e:  # jsonargparse's ArgumentError names the key
        raise ConfigError(str(e).strip()) from e
    return build(typing.get_type_hints(command)["config"], parser, namespace)


def demo(config: DemoConfig) -> int:
    """Generate FaceSynth, train the facial encoder and stages 0-3, evaluate on held-out videos, write a report.

    The whole system end to end on a CPU, about 21 minutes on 2 cores (--quick: under 3). The recipe's
    defaults are favchat/configs/demo.yaml; --config FILE reads another recipe, and any option overrides it
    (--stages.2.optim.max_steps 600 --eval.split val: tune on val, report test).
    """
    metrics = run_demo(config)
    print()
    print(render_report(metrics))
    print(f"report: {Path(config.out) / 'report'}")
    return 0


demo.cli_setup, demo.cli_argv = recipe_cli("demo", "under 3 minutes")


STEP_FILE = "demo_step.json"  # in each step's folder: the fingerprint of its config and whether it finished


def fingerprint(previous: str, cfg: Any) -> str:
    """A step's identity: its resolved config and the identity of the step it starts from (so a change anywhere
    upstream changes every later step's)."""
    from favchat.config import to_dict

    blob = json.dumps([previous, to_dict(cfg)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def step_state(folder: Path, print_: str) -> Literal["new", "done", "interrupted", "changed"]:
    """What an earlier run of the demo left in ``folder`` for the step whose fingerprint is ``print_``."""
    path = folder / STEP_FILE
    if path.is_file():
        written = json.loads(path.read_text())
        if written["fingerprint"] == print_:
            return "done" if written["done"] else "interrupted"
        return "changed"
    return "changed" if folder.exists() and any(folder.iterdir()) else "new"


def _mark(folder: Path, print_: str, done: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STEP_FILE).write_text(json.dumps({"fingerprint": print_, "done": done}))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Every step, then the evaluation and the report. A rerun keeps each step that finished with the same config
    (and the same steps before it), resumes an interrupted training stage or RL run from its last checkpoint, and
    reruns from the first step whose config changed."""
    from favchat.data.datasets import VideoCache
    from favchat.data.synth.generate import generate
    from favchat.rl.trainer import RL_STATE_FILE
    from favchat.rl.trainer import run as train_rl
    from favchat.train.metrics_log import plot_curves
    from favchat.train.toolkit import latest_checkpoint
    from favchat.train.trainer import STATE_FILE

    out = Path(cfg.out)
    runs, rl = cfg.runs(), cfg.rl_run()
    manifest_path = Path(runs[0].data.train_manifest)
    videos = VideoCache()  # each clip decoded (and its face found) once for the pretraining and every stage

    def make_clips(_: Any, resume: bool) -> None:
        manifest = generate(cfg.synth, n=cfg.clips, out=manifest_path.parent, workers=cfg.workers,
                            progress=cfg.progress)  # an interrupted generation goes on from its last clip
        if manifest != manifest_path:
            raise ValueError(f"the runs read {manifest_path}, but the clips' manifest is {manifest}")

    def run(step: FacePretrainConfig | DemoStageConfig, resume: bool) -> None:
        run_step(step, videos, progress=cfg.progress, resume=resume)

    def run_rl(step: RLConfig, resume: bool) -> None:
        train_rl(step, resume="latest" if resume else None, progress=cfg.progress)

    steps = [("synth", manifest_path.parent, {"clips": cfg.clips, "synth": cfg.synth}, make_clips, None)]
    steps += [("face_pretrain", Path(r.output_dir), r, run, None) if isinstance(r, FacePretrainConfig) else
              (f"stage{r.stage}", Path(r.output_dir), r, run, STATE_FILE) for r in runs]
    if rl is not None:
        steps.append(("rl", Path(rl.output_dir), rl, run_rl, RL_STATE_FILE))
    timings: dict[str, float] = {}
    kept: list[str] = []
    prints: dict[str, str] = {}
    print_, rerun_from = "", None
    for name, folder, step, work, checkpoint in steps:
        print_ = prints[name] = fingerprint(print_, step)
        state = step_state(folder, print_)
        if state == "done":
            log.info("%s: kept (%s finished with the same config)", name, folder)
            kept.append(name)
            continue
        resume = state == "interrupted" and (
            name == "synth" or (checkpoint is not None and latest_checkpoint(folder, checkpoint) is not None))
        if state == "changed":
            why = "its config changed" if rerun_from is None else f"it starts from {rerun_from}, which reruns"
            log.warning("%s: %s since %s was written: rerunning it (and every later step)", name, why, folder)
            rerun_from = rerun_from or name
        elif state == "interrupted":
            log.info("%s: interrupted earlier: %s", name, "resuming" if resume else "starting it again")
        if (state == "changed" or not resume) and folder.exists():
            shutil.rmtree(folder)  # only the demo's own output: --out's step folders
        _mark(folder, print_, done=False)
        t = time.perf_counter()
        work(step, resume)
        timings[f"{name}_s"] = time.perf_counter() - t
        _mark(folder, print_, done=True)

    def evaluate(checkpoint: Path, folder: Path, after: str) -> dict[str, Any]:
        """The held-out evaluation of ``checkpoint``; its answers are kept only for the same checkpoint and
        evaluation (the predictions file is read back, not asked again, so one from another model must go)."""
        key = fingerprint(prints[after], cfg.eval)
        if step_state(folder, key) == "changed":
            shutil.rmtree(folder)
        _mark(folder, key, done=False)
        t = time.perf_counter()
        result = evaluate_facesynth(checkpoint, manifest_path, folder, cfg.eval, progress=cfg.progress)
        timings[f"{folder.name}_s"] = time.perf_counter() - t
        _mark(folder, key, done=True)
        return result

    last = Path(runs[-1].output_dir) / "final"
    metrics = evaluate(last, out / "eval", f"stage{runs[-1].stage}")
    metrics["checkpoint"] = str(last)
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    if rl is not None:
        metrics["rl"] = {**evaluate(Path(rl.output_dir) / "final", out / "eval_rl", "rl"),
                         **rl_figures(Path(rl.output_dir) / "metrics.csv"), "algorithm": rl.algorithm,
                         "checkpoint": str(Path(rl.output_dir) / "final")}
        shutil.copyfile(Path(rl.output_dir) / "reward_per_round.png", report / "rl_reward.png")
    metrics["timings"] = timings
    metrics["kept"] = kept
    metrics["face_pretrain"] = json.loads((Path(runs[0].output_dir) / "report.json").read_text()).get("val")

    curves = {("facial encoder" if isinstance(r, FacePretrainConfig) else f"stage {r.stage}"):
              Path(r.output_dir) / "metrics.csv" for r in runs}
    plot_curves(curves, report / "loss.png", keys=("loss",), title="training loss per stage")
    plot_curves(curves, report / "adapter_weights.png", keys=("w_g", "w_f"), title="adapter weights (general, facial)")
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (report / "report.md").write_text(render_report(metrics))
    return metrics


def rl_figures(metrics_csv: Path) -> dict[str, Any]:
    """What the RL run's log says per round: the held-out facial reward (before RL, then after each round), the
    mean facial reward of the round's sampled responses, and the samples removed and reward decays so far."""
    import csv

    rows = list(csv.DictReader(metrics_csv.open()))
    heldout = [float(r["heldout_reward"]) for r in rows if r.get("heldout_reward")]
    steps = [r for r in rows if r.get("facial_reward")]
    rounds = sorted({int(float(r["round"])) for r in steps})
    last = steps[-1] if steps else {}
    return {"heldout_reward": heldout, "steps": len(steps),
            "train_reward": [sum(float(r["facial_reward"]) for r in steps if int(float(r["round"])) == k)
                             / sum(int(float(r["round"])) == k for r in steps) for k in rounds],
            "removed": int(float(last.get("removed") or 0)), "decay_events": int(float(last.get("decay_events") or 0))}


def run_chain(runs: Sequence[FacePretrainConfig | DemoStageConfig], videos: Any, timings: dict[str, float],
              curves: dict[str, Path], progress: bool = True) -> Path | None:
    """Run a recipe's runs in order, each from the checkpoint its ``init_from`` names: the facial encoder's
    pretraining, the stages with the recipe's hooks. Each run's seconds go to ``timings``, its metrics.csv to
    ``curves``; returns the last stage's final/ folder (None without a stage). ``videos``: a ``VideoCache``."""
    init = None
    for run in runs:
        t = time.perf_counter()
        final = run_step(run, videos, progress=progress)
        if isinstance(run, FacePretrainConfig):
            timings["face_pretrain_s"] = time.perf_counter() - t
            curves["facial encoder"] = Path(run.output_dir) / "metrics.csv"
        else:
            init = final
            timings[f"stage{run.stage}_s"] = time.perf_counter() - t
            curves[f"stage {run.stage}"] = Path(run.output_dir) / "metrics.csv"
    return init


def run_step(run: FacePretrainConfig | DemoStageConfig, videos: Any, progress: bool = True,
             resume: bool = False) -> Path:
    """One run of a recipe: the facial encoder's pretraining, or a stage with the recipe's hooks (``resume``: from
    its last checkpoint). Returns its final/ folder. ``videos``: a ``VideoCache`` shared by the runs."""
    from favchat.recipes.tiny_demo.hooks import stage_hooks
    from favchat.train.face_pretrain import pretrain_face
    from favchat.train.trainer import train

    if isinstance(run, FacePretrainConfig):
        return pretrain_face(run, progress=progress, video_cache=videos)
    return train(run, resume=resume, video_cache=videos, hooks=stage_hooks(run)).final_dir


def evaluate_facesynth(checkpoint: Path, manifest: Path, out: Path, ecfg: EvalSection, progress: bool = True,
                       num_frames: int | None = None, descriptions: bool = True) -> dict[str, Any]:
    """Held-out QA accuracy per group and description CIDEr / ROUGE-L, plus one example answer, on the
    ``ecfg.split`` clips (test by default; val to tune a recipe without touching test). Every answer is in
    ``out/predictions.jsonl``. ``num_frames``: ask with this many general and facial frames (the Fig. 8 sweep)
    instead of the checkpoint's; ``descriptions`` False: the scored questions only."""
    from favchat.data.manifest import WORDINGS, read_manifest
    from favchat.eval import metrics
    from favchat.eval.predict import ModelPredictor, Request, VideoRef, predict
    from favchat.eval.qa_accuracy import SCORED_TYPES, QAItem, accuracy_by_type, blind_answers

    clips = sorted(read_manifest(manifest, split=ecfg.split), key=lambda c: c.id)[: ecfg.max_clips]
    if not clips:
        raise ValueError(f"{manifest}: no {ecfg.split} clips")
    predictor = ModelPredictor(checkpoint, num_frames=num_frames, max_new_tokens=ecfg.max_new_tokens)
    requests = []
    for c in clips:
        video = VideoRef(c.video_path, c.frame_range)
        for k, qa in enumerate(c.qa):
            if qa.type in SCORED_TYPES or (descriptions and qa.type == "description"):
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
    captions = {"n": len(desc), "cider": metrics.cider(refs, hyps), "rouge_l": metrics.rouge_l(refs, hyps)} if desc else {}
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
    if m.get("rl"):
        lines += render_rl(m)
    if m.get("face_pretrain"):
        lines += ["", "## Facial encoder pretraining (its label heads on the val split)", "",
                  "| labels | accuracy |", "|---|---|"]
        lines += [f"| {k} | {100 * v:.1f}% |" for k, v in m["face_pretrain"].items()]
    e = m["example"]
    lines += ["", "## Example", "", f"Video `{e['video']}` (clip {e['clip']}), ground truth {e['ground_truth']}.", "",
              f"Q: {e['question']}", "", f"A: {e['answer']}", "", "## Time", ""]
    lines += [f"- {k}: {v:.1f} s" for k, v in m["timings"].items()]
    if m.get("kept"):
        lines.append(f"- kept from an earlier run with the same config: {', '.join(m['kept'])}")
    lines += ["", "Curves: `loss.png`, `adapter_weights.png`" + (", `rl_reward.png`." if m.get("rl") else ".")]
    return "\n".join(lines) + "\n"


def render_rl(m: dict[str, Any]) -> list[str]:
    """The report's RL section: the answers before and after RL, and the facial reward per round."""
    r = m["rl"]
    name = {"de_grpo": "DE-GRPO", "grpo": "GRPO"}[r["algorithm"]]
    lines = ["", f"## After RL ({name})", "",
             f"The same held-out questions asked of the RL policy (`{r['checkpoint']}`), beside stage 3's model.", "",
             "| question type | stage 3 | after RL | n |", "|---|---|---|---|"]
    for t, v in r["accuracy"].items():
        lines.append(f"| {t} | {100 * m['accuracy'][t]['accuracy']:.1f}% | {100 * v['accuracy']:.1f}% | {v['n']} |")
    if r["captions"]:
        lines += ["", f"Descriptions: CIDEr {m['captions']['cider']:.3f} -> {r['captions']['cider']:.3f}, ROUGE-L "
                      f"{m['captions']['rouge_l']:.3f} -> {r['captions']['rouge_l']:.3f}."]
    held = r["heldout_reward"]
    lines += ["", f"Facial reward of the held-out descriptions (greedy): {held[0]:.4f} before RL"
                  + "".join(f", {v:.4f} after round {k}" for k, v in enumerate(held[1:], 1)) + ".",
              "Facial reward of the sampled responses, mean of each round: "
              + " -> ".join(f"{v:.4f}" for v in r["train_reward"])
              + f" ({r['steps']} steps; samples removed {r['removed']}, reward decays {r['decay_events']})."]
    return lines
