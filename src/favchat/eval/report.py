"""Evaluation outputs: ``metrics.json`` and a markdown report whose tables follow the paper's layout
(Table 1/7: VideoChatGPT scores, CIDEr, ROUGE-L, AutoDQ; Table 2: UAR/WAR; Table 9: verification
accuracy; Table 10: EMER overlaps), plus the frame-sweep plot (Fig. 8)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _f(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _caption_table(method: str, cap: dict[str, Any] | None, qa: dict[str, Any] | None) -> list[str]:
    """Table 1 layout: overall score, the VideoChatGPT criteria, CIDEr, ROUGE-L, AutoDQ; one row for the
    captions (summaries) and one for the QA pairs when both were evaluated."""
    head = ["Method", "Test* (0–10)", "Correctness", "Detail", "Context", "Temporal", "Consistency", "CIDEr",
            "ROUGE-L", "AutoDQ"]
    rows, scale = [], None
    for name, part in (("captions", cap), ("QA", qa)):
        if not part:
            continue
        s = (part.get("judge") or {}).get("summary", {})
        scale = scale or next((v.get("scale") for c, v in s.items() if c != "overall"), None)
        mean = [_f((s.get(c) or {}).get("mean")) for c in
                ("overall", "correctness", "detail", "context", "temporal", "consistency")]
        rows.append([f"{method} ({name}, n={part['n']})", *mean, _f(part.get("cider"), 3), _f(part.get("rouge_l"), 3),
                     _f((part.get("autodq") or {}).get("f1"), 3)])
    lines = [*_table(head, rows), ""]
    lines.append((f"Judge criteria on a 0–{scale} scale; " if scale else "No judge configured; ")
                 + "Test* is the judge's overall 10-point score. CIDEr/ROUGE-L tokenizer: "
                 + f"{(cap or {}).get('tokenizer', '–')}.")
    if cap and cap.get("autodq"):
        a = cap["autodq"]
        lines.append(f"AutoDQ: precision {_f(a['precision'], 3)}, recall {_f(a['recall'], 3)}, F1 {_f(a['f1'], 3)}.")
    return lines


def render_markdown(results: dict[str, Any], method: str = "FaVChat") -> str:
    bench = results.get("benchmark", "?")
    lines = [f"# FaVChat evaluation: {bench}", "", f"Generated {results.get('created', '')}."]
    if results.get("note"):
        lines += ["", f"> {results['note']}"]
    for key, value in results.get("inputs", {}).items():
        lines.append(f"- {key}: `{value}`")
    if "classification" in results:
        c = results["classification"]
        lines += ["", f"## Emotion recognition ({bench.upper()}, zero-shot, {c.get('protocol', '')})", ""]
        lines += _table(["Method", "Modality", "UAR", "WAR"], [[method, "V", _f(100 * c["uar"]), _f(100 * c["war"])]])
        if "folds" in c:
            lines += ["", f"UAR and WAR: the mean over the {len(c['folds'])} folds' test sets (the paper's protocol); "
                          f"std {_f(100 * c['uar_std'])} / {_f(100 * c['war_std'])}. Over all clips pooled: UAR "
                          f"{_f(100 * c['pooled_uar'])}, WAR {_f(100 * c['pooled_war'])}.", ""]
            lines += _table(["Fold", "Clips", "UAR", "WAR", "Unmatched"],
                            [[str(f["fold"]), str(f["n"]), _f(100 * f["uar"]), _f(100 * f["war"]), str(f["unmatched"])]
                             for f in c["folds"]])
        lines += ["", f"{c['n']} clips; {c['unmatched']} answers named no class (counted as wrong).", "",
                  "### Per class" + (" (all folds' clips pooled)" if "folds" in c else ""), ""]
        lines += _table(["Class", "Support", "Predicted", "Recall", "Precision", "F1"],
                        [[r["class"], str(r["support"]), str(r["predicted"]), _f(100 * r["recall"]),
                          _f(100 * r["precision"]), _f(100 * r["f1"])] for r in c["per_class"]])
        lines += ["", "![confusion matrix](confusion.png)"]
    if "captions" in results or "qa" in results:
        lines += ["", "## Facial video description and QA (VideoChatGPT scores, n-gram and event metrics)", ""]
        lines += _caption_table(method, results.get("captions"), results.get("qa"))
    if "verification" in results:
        v = results["verification"]
        lines += ["", "## Face verification (pairs)", ""]
        lines += _table(["Method", "Acc"], [[method, f"{100 * v['accuracy']:.2f} ± {100 * v['std']:.2f}"]])
        lines += ["", f"{v['pairs']} pairs, {v['folds']} folds; threshold chosen on the other folds; "
                      f"pair score: {v['scorer']}."]
    if "emer" in results:
        e = results["emer"]
        lines += ["", "## Explainable multimodal emotion reasoning (EMER)", ""]
        lines += _table(["Model", "Clue Overlap", "Label Overlap"], [[method, _f(e["clue_overlap"]), _f(e["label_overlap"])]])
    if "frame_sweep" in results:
        rows = results["frame_sweep"]["rows"]
        keys = [k for k in rows[0] if k != "frames"]
        lines += ["", "## Inference frame count (Fig. 8)", ""]
        lines += _table(["Frames", *keys], [[str(r["frames"]), *(_f(r.get(k), 3) for k in keys)] for r in rows])
        lines += ["", "![frame sweep](frame_sweep.png)"]
    if results.get("judge_usage"):
        u = results["judge_usage"]
        lines += ["", f"Judge: {u.get('calls', 0)} requests sent, {u.get('resumed', 0)} results resumed from "
                      f"judge_results.jsonl, {u.get('cached', 0)} answered from the cache, "
                      f"{u.get('prompt_tokens', 0)} + {u.get('completion_tokens', 0)} tokens, ${u.get('usd', 0):.4f}."]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, results: dict[str, Any], method: str = "FaVChat") -> dict[str, Path]:
    """Write ``metrics.json`` and ``report.md`` into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {"created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), **results}
    mpath, rpath = out / "metrics.json", out / "report.md"
    mpath.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    rpath.write_text(render_markdown(results, method), encoding="utf-8")
    return {"metrics": mpath, "report": rpath}


def plot_frame_sweep(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Scores against the number of inference frames: judge criteria on the left axis, CIDEr/ROUGE-L on the right."""
    from favchat.plotting import pyplot, save_figure

    plt = pyplot()

    xs = [r["frames"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    judged = [k for k in ("correctness", "detail", "context", "temporal", "overall") if rows[0].get(k) is not None]
    for k in judged:
        ax.plot(xs, [r[k] for r in rows], marker="o", label=k)
    ax2 = ax.twinx() if judged else ax
    for k, style in (("cider", "--"), ("rouge_l", ":")):
        ax2.plot(xs, [r[k] for r in rows], style, marker="s", color="gray" if k == "cider" else "black", label=k)
    ax.set_xlabel("input frames")
    ax.set_ylabel("judge score" if judged else "CIDEr / ROUGE-L")
    if judged:
        ax2.set_ylabel("CIDEr / ROUGE-L")
    ax.set_xticks(xs)
    handles = ax.get_legend_handles_labels()
    if ax2 is not ax:
        h2 = ax2.get_legend_handles_labels()
        handles = (handles[0] + h2[0], handles[1] + h2[1])
    ax.legend(*handles, fontsize=8, loc="best")
    ax.set_title("Influence of inference frame length")
    return save_figure(fig, path, dpi=120)
