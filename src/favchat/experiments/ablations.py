"""``favchat experiment ablations``: does prompt guidance help? The paper's model ablations measured on FaceSynth.

    favchat experiment ablations --out runs/ablations            # the experiment (docs/ablations.md: its time)
    favchat experiment ablations --quick --out runs/ablations_q  # the same steps at smoke-test scale (CI)

Every variant trains with the demo's recipe (``favchat/configs/demo.yaml``: model, schedule, learning rates;
``recipe_options`` set its budget) on the same FaceSynth clips, for each of ``seeds`` training seeds:

1. The parts before the prompt-query levels train once per seed, on the full model: the facial encoder's task
   pretraining and stage 0 (the reader LLM). They are the same for every variant: nothing in them depends on
   the levels.
2. Each variant (the full model, no facial encoder, no M chain, no adapters, prompt-agnostic: its model
   overrides) is built with fresh levels from the seed, takes that facial encoder and LLM (``graft``), trains
   stages 1-3 with the same budget and answers the same held-out questions. The full model and the
   prompt-agnostic one are also asked with each frame count of ``frames`` (Fig. 8).
3. The report (``<out>/report/report.md``, ``metrics.json``, ``groups.png``, ``frames.png``): per question group and
   per label accuracy and F1, mean and spread over seeds, and each variant's paired difference from the full
   model with its 95% interval over test clips and a sign test (``favchat.eval.paired``), read by the rule
   fixed in ``RULE`` before any run.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from favchat.demo import (
    RECIPES,
    DemoConfig,
    EvalSection,
    demo,
    evaluate_facesynth,
    load_recipe,
    recipe_cli,
    run_chain,
)
from favchat.train.config import FacePretrainConfig

log = logging.getLogger("favchat.experiments.ablations")

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    # one stream: the chain reads every block of the general tower (the facial tower's block indices no longer apply)
    "no_face_encoder": {"use_face_encoder": False, "low_level_blocks": None},
    "no_m_chain": {"use_m_chain": False},
    "no_adapters": {"use_adapters": False},
    "prompt_agnostic": {"use_prompt_guidance": False},
}
GROUPS = ("attribute", "action", "emotion", "yesno", "all")
RULE = ("Each variant is compared with the full model on the same test questions, seeds and budget. Its "
        "difference is the mean over seeds of the accuracy difference; the 95% interval resamples the test "
        "clips ({resamples} resamples). A variant is called worse (better) than the "
        "full model in a group when the whole interval lies below (above) zero, and not distinguishable "
        "otherwise; the sign test over the questions the two answer apart is reported beside it. The paper's "
        "claim that prompt guidance helps is supported here if the prompt-agnostic variant is worse on all "
        "questions; it is contradicted if it is better, and not tested at this budget otherwise. No setting "
        "is tuned per variant.")


@dataclass
class AblationsConfig:
    """The experiment: the demo's recipe at a budget, the seeds, the variants and the frame sweep."""

    out: str = "runs/ablations"
    """Output folder: data/ (the clips), seed<S>/ (the shared runs and a folder per variant), report/."""
    recipe: str = "demo"
    """The training recipe of every variant: a recipe of favchat demo in favchat/configs (demo, demo_quick)
    or a YAML file in its format."""
    recipe_options: dict[str, Any] = field(default_factory=dict)
    """Options of favchat demo applied to the recipe: the budget (e.g. {clips: 1200,
    stages.2.optim.max_steps: 350}); the same for every variant."""
    seed: int = 0
    """The first training seed: the runs train with seed, seed+1, ... (seeds of them); the recipe's synth.seed
    draws the clips."""
    seeds: int = 3
    """Training seeds per variant (the mean and spread are over them)."""
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in VARIANTS.items()})
    """Model config overrides per variant; 'full' (none) is the reference of every paired comparison."""
    frames: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    """Frame counts the sweep asks with (Fig. 8; the recipe's model trains with its config's count)."""
    sweep_variants: list[str] = field(default_factory=lambda: ["full", "prompt_agnostic"])
    """The variants asked with each frame count."""
    sweep_clips: int = 40
    """The first N test clips the sweep asks at each frame count (their scored questions)."""
    resamples: int = 2000
    """Clip resamples of the paired comparison's 95% interval."""
    progress: bool = True
    """Progress bars."""

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.variants.get("full") != {}:
            raise ValueError("variants must hold 'full' with no overrides: the reference of every comparison")
        unknown = sorted(set(self.sweep_variants) - set(self.variants))
        if unknown:
            raise ValueError(f"sweep_variants {unknown} are not variants; choose from {sorted(self.variants)}")
        if not self.frames or min(self.frames) < 1:
            raise ValueError(f"frames must be frame counts >= 1, got {self.frames}")
        if self.sweep_clips < 1 or self.resamples < 100:
            raise ValueError("sweep_clips must be >= 1 and resamples >= 100")
        check_variants(self.demo_recipe(), self.variants)  # a bad recipe, option or variant fails before any work

    def demo_recipe(self) -> DemoConfig:
        """The demo recipe every variant runs, with ``recipe_options`` applied."""
        path = RECIPES / f"{self.recipe}.yaml"
        path = Path(str(path)) if path.is_file() else Path(self.recipe)
        if not path.is_file():
            raise ValueError(f"recipe {self.recipe!r}: neither a recipe in favchat/configs nor a YAML file")
        args = ["--config", str(path), "--progress", str(self.progress).lower()]
        for key, value in self.recipe_options.items():
            args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
        return load_recipe(args, demo)


def ablations(config: AblationsConfig) -> int:
    """Train the full model and each ablation on the same clips, seeds and budget; compare them on held-out clips.

    The paper's Table 3 variants (no facial encoder, no M chain, no adapters) and a prompt-agnostic one, each
    against the full model: per group and per label accuracy and F1 over seeds, paired differences with 95%
    intervals, and the frame sweep of Fig. 8. The recipe is favchat/configs/ablations.yaml (--quick:
    ablations_quick.yaml, one seed, a step or two a run); docs/ablations.md says what it shows and its time.
    """
    summary = run_ablations(config)
    print()
    print(render_report(summary))
    print(f"report: {Path(config.out) / 'report'}")
    return 0


ablations.cli_setup, ablations.cli_argv = recipe_cli("ablations", "one seed, a step or two a run", stage_help=False)


def check_variants(recipe: DemoConfig, variants: dict[str, dict[str, Any]]) -> None:
    """Build every variant's model on the meta device (no memory, no weights): a bad override fails here,
    before any clip is drawn, naming the variant."""
    import torch

    from favchat import FaVChatForConditionalGeneration
    from favchat.model.presets import preset_config

    model = recipe.face_pretrain.model
    for name, overrides in variants.items():
        try:
            with torch.device("meta"):
                FaVChatForConditionalGeneration(preset_config(model.preset, **{**model.overrides, **overrides}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"variants.{name}: {e}") from None


def graft(source: Path, overrides: dict[str, Any], seed: int, out: Path) -> Path:
    """A variant's start: its model built from ``source``'s config with ``overrides`` (fresh levels, initialised
    from ``seed``), holding ``source``'s facial encoder and LLM; the rest of ``source``'s folder (processor,
    a recipe's files) is copied beside it."""
    from accelerate.utils import set_seed

    from favchat import FaVChatConfig, FaVChatForConditionalGeneration

    shared = FaVChatForConditionalGeneration.from_pretrained(source)
    set_seed(seed)
    model = FaVChatForConditionalGeneration(FaVChatConfig.from_pretrained(source, **overrides))
    for name in ("face_encoder", "language_model"):
        part = getattr(model, name)
        if part is not None:  # the variant's own weights of it, all of them (without the M chain: fewer blocks')
            weights = getattr(shared, name).state_dict()
            part.load_state_dict({k: weights[k] for k in part.state_dict()})
    shutil.copytree(source, out, dirs_exist_ok=True)
    model.save_pretrained(out)
    return out


def run_ablations(cfg: AblationsConfig) -> dict[str, Any]:
    from favchat.data.datasets import VideoCache
    from favchat.data.synth.generate import generate
    from favchat.eval.predict import read_predictions
    from favchat.eval.qa_accuracy import QAItem, f1_by_type, label_scores

    recipe = cfg.demo_recipe()
    root = Path(cfg.out)
    start = t = time.perf_counter()
    manifest = generate(recipe.synth, n=recipe.clips, out=root / "data", workers=recipe.workers,
                        progress=cfg.progress)
    timings: dict[str, float] = {"synth_s": time.perf_counter() - t}
    videos = VideoCache()  # each clip decoded once for every run of every seed and variant
    sweep_eval = EvalSection(max_new_tokens=recipe.eval.max_new_tokens, max_clips=cfg.sweep_clips,
                             split=recipe.eval.split)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in cfg.variants}
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        folder = root / f"seed{seed}"
        shared = [r for r in _placed(recipe, seed, folder, manifest) if isinstance(r, FacePretrainConfig) or r.stage == 0]
        seconds: dict[str, float] = {}
        run_chain(shared, videos, seconds, {}, progress=cfg.progress)
        source = Path(shared[-1].output_dir) / "final"
        for variant, overrides in cfg.variants.items():
            log.info("seed %d: %s", seed, variant)
            stages = [r for r in _placed(recipe, seed, folder / variant, manifest) if not isinstance(r, FacePretrainConfig) and r.stage > 0]
            graft(source, overrides, seed, Path(stages[0].init_from))
            mine: dict[str, float] = {}
            final = run_chain(stages, videos, mine, {}, progress=cfg.progress)
            t = time.perf_counter()
            metrics = evaluate_facesynth(final, manifest, folder / variant / "eval", recipe.eval, cfg.progress,
                                         descriptions=False)
            preds = read_predictions(folder / variant / "eval" / "predictions.jsonl")
            items = [QAItem(i, p["type"], p["question"], p["reference"], p["answer"]) for i, p in preds.items()]
            mine["eval_s"] = time.perf_counter() - t
            record = {"seed": seed, "accuracy": metrics["accuracy"], "blind_baseline": metrics["blind_baseline"],
                      "f1": f1_by_type(items), "labels": label_scores(items),
                      "correct": _correct(items), "timings": mine, "frames": {}}
            if variant in cfg.sweep_variants:
                t = time.perf_counter()
                for k in cfg.frames:
                    m = evaluate_facesynth(final, manifest, folder / variant / f"frames{k}", sweep_eval,
                                           cfg.progress, num_frames=k, descriptions=False)
                    record["frames"][k] = m["accuracy"]
                mine["frames_s"] = time.perf_counter() - t
            runs[variant].append(record)
        timings[f"seed{seed}_shared_s"] = sum(seconds.values())
    timings["total_s"] = time.perf_counter() - start
    summary = summarize(cfg, recipe, runs, timings)
    write_report(summary, root / "report")
    return summary


def _placed(recipe: DemoConfig, seed: int, out: Path, manifest: Path) -> list[Any]:
    """The recipe's runs with their paths under ``out`` and this seed, every one reading the one set of clips."""
    return [replace(r, data=replace(r.data, train_manifest=str(manifest)))
            for r in replace(recipe, seed=seed, out=str(out)).runs()]


def _correct(items: list[Any]) -> dict[str, dict[str, bool]]:
    """Whether each scored question was answered right, by group ("all": every group)."""
    from favchat.eval.qa_accuracy import SCORED_TYPES, answer_correct

    out: dict[str, dict[str, bool]] = {"all": {}}
    for it in items:
        if it.type in SCORED_TYPES:
            out.setdefault(it.type, {})[it.id] = out["all"][it.id] = answer_correct(it.type, it.reference,
                                                                                    it.prediction)
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds (0 for one seed), and the values."""
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def _verdict(ci: list[float]) -> str:
    return "worse" if ci[1] < 0 else "better" if ci[0] > 0 else "not distinguishable"


def summarize(cfg: AblationsConfig, recipe: DemoConfig, runs: dict[str, list[dict[str, Any]]],
              timings: dict[str, float]) -> dict[str, Any]:
    """The report's numbers from each variant's per-seed records."""
    from favchat.config import to_dict
    from favchat.data.taxonomy import BY_NAME
    from favchat.eval.paired import paired_difference

    variants: dict[str, Any] = {}
    for name, recs in runs.items():
        labels: dict[str, dict[str, Any]] = {}
        for label in sorted({k for r in recs for k in r["labels"]}, key=lambda n: (BY_NAME[n].group, n)):
            rows = [r["labels"][label] for r in recs if label in r["labels"]]
            labels[label] = {"group": BY_NAME[label].group}
            for key, n_key in (("f1", "support"), ("yesno_accuracy", "yesno_n")):
                values = [row[key] for row in rows if key in row]
                if values:
                    labels[label] |= {key: _stats(values), n_key: sum(row[n_key] for row in rows if key in row)}
        variants[name] = {
            "overrides": cfg.variants[name],
            "accuracy": {g: _stats([r["accuracy"][g]["accuracy"] for r in recs]) for g in GROUPS
                         if g in recs[0]["accuracy"]},
            "f1": {g: _stats([r["f1"][g]["f1"] for r in recs]) for g in GROUPS if g in recs[0]["f1"]},
            "n": {g: v["n"] for g, v in recs[0]["accuracy"].items()},
            "labels": labels,
            "frames": {k: {g: _stats([r["frames"][k][g]["accuracy"] for r in recs]) for g in recs[0]["frames"][k]}
                       for k in recs[0]["frames"]},
            "timings": {k: _stats([r["timings"][k] for r in recs])["mean"] for k in recs[0]["timings"]},
        }
    comparisons: dict[str, dict[str, Any]] = {}
    for name in runs:
        if name == "full":
            continue
        comparisons[name] = {}
        for g in runs["full"][0]["correct"]:
            c = paired_difference([r["correct"][g] for r in runs[name]], [r["correct"][g] for r in runs["full"]],
                                  cluster=lambda q: q.split("#")[0], resamples=cfg.resamples)
            comparisons[name][g] = c | {"verdict": _verdict(c["ci"])}
    claim = None
    if "prompt_agnostic" in comparisons:
        verdict = comparisons["prompt_agnostic"]["all"]["verdict"]
        claim = {"worse": "supported", "better": "contradicted"}.get(verdict, "not tested at this budget")
    return {"config": to_dict(cfg), "recipe": to_dict(recipe), "rule": RULE.format(resamples=cfg.resamples),
            "seeds": list(range(cfg.seed, cfg.seed + cfg.seeds)), "test_clips": recipe.eval.max_clips,
            "split": recipe.eval.split, "blind_baseline": runs["full"][0]["blind_baseline"],
            "variants": variants, "comparisons": comparisons, "claim": claim, "timings": timings}


def _pm(s: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * s['mean']:.{digits}f} ± {scale * s['sd']:.{digits}f}"


def render_report(m: dict[str, Any]) -> str:
    recipe, variants = m["recipe"], m["variants"]
    groups = [g for g in GROUPS if g in variants["full"]["accuracy"]]
    steps = [f"facial encoder {recipe['face_pretrain']['optim']['max_steps']} x "
             f"{recipe['face_pretrain']['optim']['batch_size']}"]
    steps += [f"stage {k} {st['optim']['max_steps']} x {st['optim']['batch_size']} (lr {st['optim']['lr']:g})"
              for k, st in sorted(recipe["stages"].items(), key=lambda kv: int(kv[0]))]
    lines = ["# FaVChat ablations on FaceSynth", "",
             "## The experiment, fixed before its runs", "",
             f"- Clips: {recipe['clips']} FaceSynth clips (synth seed {recipe['synth']['seed']}); every variant is "
             f"asked the scored questions of the first {m['test_clips']} {m['split']} clips (held-out identities).",
             f"- Training seeds: {', '.join(map(str, m['seeds']))}; the same for every variant.",
             f"- Budget (steps x batch): {'; '.join(steps)}. The facial encoder's pretraining and stage 0 run "
             "once per seed and every variant starts from them; stages 1-3 run per variant.",
             "- Variants (model config overrides): " + "; ".join(
                 f"{v} {json.dumps(d['overrides']) if d['overrides'] else '(reference)'}" for v, d in variants.items()),
             "", f"Rule: {m['rule']}", "",
             "## Accuracy per question group (%, mean ± sd over seeds)", "",
             "| variant | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for v, d in variants.items():
        lines.append(f"| {v} | " + " | ".join(_pm(d["accuracy"][g]) for g in groups) + " |")
    blind = m["blind_baseline"]
    lines.append("| blind baseline | " + " | ".join(f"{100 * blind[g]['accuracy']:.1f}" for g in groups) + " |")
    lines.append("| questions per seed | " + " | ".join(str(variants["full"]["n"][g]) for g in groups) + " |")
    f1_groups = [g for g in groups if g in variants["full"]["f1"]]
    lines += ["", "## F1 per question group (%, mean ± sd over seeds)", "",
              "Attribute, action, emotion: micro-F1 of the labels of the group the answers name; yes/no: F1 of the "
              "yes answers.", "", "| variant | " + " | ".join(f1_groups) + " |", "|---" * (len(f1_groups) + 1) + "|"]
    for v, d in variants.items():
        lines.append(f"| {v} | " + " | ".join(_pm(d["f1"][g]) for g in f1_groups) + " |")
    lines += ["", "## Paired comparison with the full model (accuracy difference, percentage points)", "",
              "| variant | group | difference | 95% interval | per seed | right/wrong vs full | sign test p | "
              "verdict |", "|---|---|---|---|---|---|---|---|"]
    for v, comp in m["comparisons"].items():
        for g in groups:
            c = comp[g]
            lines.append(f"| {v} | {g} | {100 * c['diff']:+.1f} | [{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}] "
                         f"| {' / '.join(f'{100 * x:+.1f}' for x in c['per_seed'])} | {c['wins']}/{c['losses']} | "
                         f"{c['p']:.3g} | {c['verdict']} |")
    if m["claim"]:
        c = m["comparisons"]["prompt_agnostic"]["all"]
        lines += ["", f"**Prompt guidance (prompt-agnostic vs full, all questions):** {100 * c['diff']:+.1f} points "
                  f"[{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]: by the rule, the claim is **{m['claim']}** "
                  "here."]
    sweep = {v: d["frames"] for v, d in variants.items() if d["frames"]}
    if sweep:
        ks = list(next(iter(sweep.values())))
        lines += ["", "## Frame sweep (accuracy on all scored questions, %, mean ± sd over seeds)", "",
                  "| variant | " + " | ".join(f"{k} frames" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
        lines += [f"| {v} | " + " | ".join(_pm(f[k]["all"]) for k in ks) + " |" for v, f in sweep.items()]
    lines += ["", "## Per label (%, mean over seeds)", "",
              "F1 over the answers to its group's questions (support: reference answers naming it, over seeds); "
              "yes/no: accuracy of the yes/no questions asked about it (n over seeds).", "",
              "| label | group | support | " + " | ".join(f"F1 {v}" for v in variants) + " | yes/no n | "
              + " | ".join(f"yes/no {v}" for v in variants) + " |", "|---" * (3 + 2 * len(variants) + 1) + "|"]
    labels = {label: row for d in variants.values() for label, row in d["labels"].items()}

    def cell(v: str, label: str, key: str) -> str:
        value = variants[v]["labels"].get(label, {}).get(key)
        return "–" if value is None else f"{100 * value['mean']:.0f}"

    for label in sorted(labels, key=lambda n: (labels[n]["group"], n)):
        support = max(d["labels"].get(label, {}).get("support", 0) for d in variants.values())
        asked = max(d["labels"].get(label, {}).get("yesno_n", 0) for d in variants.values())
        lines.append(f"| {label} | {labels[label]['group']} | {support} | "
                     + " | ".join(cell(v, label, "f1") for v in variants) + f" | {asked} | "
                     + " | ".join(cell(v, label, "yesno_accuracy") for v in variants) + " |")
    lines += ["", "## Time", "", f"- total: {m['timings']['total_s']:.0f} s (clips {m['timings']['synth_s']:.0f} s)"]
    lines += [f"- {v}, per seed: " + ", ".join(f"{k} {t:.0f} s" for k, t in d["timings"].items())
              for v, d in variants.items()]
    lines += [f"- {k}: {t:.0f} s" for k, t in m["timings"].items() if k.startswith("seed")]
    lines += ["", "Figures: `groups.png` (accuracy and F1 per group, error bars one sd over seeds), `frames.png` "
              "(the frame sweep)."]
    return "\n".join(lines) + "\n"


def write_report(m: dict[str, Any], folder: Path) -> None:
    from favchat.plotting import pyplot, save_figure

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(m, indent=2))
    (folder / "report.md").write_text(render_report(m))
    plt = pyplot()
    variants = m["variants"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key in zip(axes, ("accuracy", "f1"), strict=True):
        groups = [g for g in GROUPS if g in variants["full"][key]]
        width = 0.8 / len(variants)
        for i, (v, d) in enumerate(variants.items()):
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(groups))]
            ax.bar(xs, [100 * d[key][g]["mean"] for g in groups], width, yerr=[100 * d[key][g]["sd"] for g in groups],
                   capsize=2, label=v)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(f"{key} per question group, mean ± sd over {len(m['seeds'])} seeds")
    axes[0].legend(fontsize=8)
    save_figure(fig, folder / "groups.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for v, d in variants.items():
        if d["frames"]:
            ks = list(d["frames"])
            ax.errorbar([int(k) for k in ks], [100 * d["frames"][k]["all"]["mean"] for k in ks],
                        yerr=[100 * d["frames"][k]["all"]["sd"] for k in ks], marker="o", capsize=3, label=v)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames asked with")
    ax.set_ylabel("accuracy, all scored questions (%)")
    ax.set_title("frame sweep (Fig. 8), mean ± sd over seeds")
    ax.legend()
    save_figure(fig, folder / "frames.png")
