"""LLM-judge metrics through any OpenAI-compatible endpoint: VideoChatGPT scores, AutoDQ, EMER overlaps.

- ``Judge.scores``: one request per (answer, criterion) — correctness, detail, context, temporal,
  consistency on a 0–``scale`` integer scale (5 as in VideoChatGPT, or 10) and the overall 10-point
  score (the paper's "Test(2000)" column). Each criterion has its own prompt in ``favchat/prompts``.
- ``Judge.autodq``: events are extracted from the reference and from the prediction by the judge, then
  each prediction event is checked for entailment by the reference (precision) and each reference event
  by the prediction (recall); precision and recall are pooled over the data set (sum of entailed events
  over sum of events), F1 is their harmonic mean.
- ``Judge.emer``: EMER's clue overlap and label overlap, each a 0–10 score.

Replies are parsed strictly (a JSON object ``{"score": n}`` with an integer in range, or a JSON list of
the expected length); a malformed reply is rejected, retried by ``ChatClient`` and never cached.
``ChatClient``'s disk cache makes a rerun free; in addition every finished request is appended to a
results JSONL keyed by task and content hash, so an interrupted run keeps its partial results and a
rerun sends only the missing requests, even without a cache folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from favchat import prompts
from favchat.chat_api import ChatAPIConfig, ChatAPIError, ChatClient

log = logging.getLogger(__name__)

CRITERIA: tuple[str, ...] = ("correctness", "detail", "context", "temporal", "consistency")
ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")


class JudgeError(RuntimeError):
    """Judge requests that failed after all retries; the results file keeps what succeeded."""


class JudgeUnreachableError(JudgeError):
    """The judge endpoint could not be reached at all."""


@dataclass
class JudgeItem:
    """One predicted answer to score. ``question2``/``prediction2``: the rephrased question and its answer
    (only the consistency criterion reads them)."""

    id: str
    question: str
    reference: str
    prediction: str
    question2: str | None = None
    prediction2: str | None = None


def parse_score(text: str, scale: int) -> int:
    """``{"score": n}`` with an integer 0 <= n <= scale, and nothing else; otherwise ``ValueError``."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON object: {text[:80]!r}") from e
    if not isinstance(obj, dict) or set(obj) != {"score"}:
        raise ValueError(f'expected {{"score": <integer>}}, got {text[:80]!r}')
    s = obj["score"]
    if isinstance(s, bool) or not isinstance(s, int):
        raise ValueError(f"score must be an integer, got {s!r}")
    if not 0 <= s <= scale:
        raise ValueError(f"score {s} outside 0..{scale}")
    return s


def parse_events(text: str) -> list[str]:
    """A JSON list of non-empty strings."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON list: {text[:80]!r}") from e
    if not isinstance(obj, list) or not all(isinstance(e, str) and e.strip() for e in obj):
        raise ValueError(f"expected a JSON list of event strings, got {text[:80]!r}")
    return [e.strip() for e in obj]


def parse_entailment(text: str, count: int) -> list[str]:
    """A JSON list of exactly ``count`` labels from ``ENTAILMENT_LABELS``."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON list: {text[:80]!r}") from e
    if not isinstance(obj, list) or len(obj) != count:
        raise ValueError(f"expected a list of {count} labels, got {text[:80]!r}")
    labels = [str(x).strip().lower() for x in obj]
    bad = [x for x in labels if x not in ENTAILMENT_LABELS]
    if bad:
        raise ValueError(f"unknown entailment labels {bad}; expected {ENTAILMENT_LABELS}")
    return labels


@dataclass
class _Task:
    key: str  # stable name: kind / item id / criterion
    messages: list[dict[str, Any]]
    parse: Callable[[str], Any]

    @property
    def digest(self) -> str:
        # A changed prediction, reference or prompt changes the digest, so stale results are not reused.
        blob = json.dumps(self.messages, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _messages(prompt_name: str, **fields: Any) -> list[dict[str, Any]]:
    return [{"role": "system", "content": prompts.load("judge_system")},
            {"role": "user", "content": prompts.render(prompt_name, **fields)}]


class ResultsLog:
    """Append-only JSONL of finished judge requests: ``{"key", "digest", "value", "text"}`` per line."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        self.done: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        if self.path and self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # a line cut by a crash: that request is simply redone
                    try:
                        r = json.loads(line)
                        self.done[(r["key"], r["digest"])] = r["value"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue

    def add(self, task: _Task, value: Any, text: str) -> None:
        with self._lock:
            self.done[(task.key, task.digest)] = value
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": task.key, "digest": task.digest, "value": value, "text": text},
                                   ensure_ascii=False) + "\n")


class Judge:
    """Scores predictions with an LLM judge. ``results_path``: the resumable JSONL of finished requests."""

    def __init__(self, client: ChatClient, scale: int = 5, results_path: str | os.PathLike | None = None,
                 progress: bool = True):
        if scale not in (5, 10):
            raise ValueError(f"scale must be 5 (VideoChatGPT) or 10, got {scale}")
        self.client = client
        self.scale = scale
        self.log = ResultsLog(results_path)
        self.progress = progress
        self.resumed = 0  # results taken from the results file instead of being requested

    @classmethod
    def from_config(cls, config: ChatAPIConfig, **kwargs: Any) -> Judge:
        return cls(ChatClient(config), **kwargs)

    # -- running -------------------------------------------------------------------------------

    def _run(self, tasks: Sequence[_Task], desc: str) -> dict[str, Any]:
        """Values by task key; tasks already in the results log are not sent again."""
        from tqdm.auto import tqdm

        out: dict[str, Any] = {}
        todo: list[_Task] = []
        for t in tasks:
            if (t.key, t.digest) in self.log.done:
                out[t.key] = self.log.done[(t.key, t.digest)]
            else:
                todo.append(t)
        self.resumed += len(out)
        if not todo:
            return out
        if len(out):
            log.info("%s: %d of %d judge results resumed from %s", desc, len(out), len(tasks), self.log.path)
        # The first request alone: an unreachable or misconfigured judge fails once, clearly, not N times.
        failures: list[str] = []
        try:
            self._one(todo[0], out)
        except JudgeUnreachableError:
            raise
        except JudgeError as e:
            failures.append(f"{todo[0].key}: {e}")
        with ThreadPoolExecutor(max_workers=self.client.config.concurrency) as pool, \
                tqdm(total=len(todo), initial=1, desc=desc, disable=not self.progress) as bar:
            futures = {pool.submit(self._one, t, out): t for t in todo[1:]}
            for fut in as_completed(futures):
                try:
                    fut.result()
                except JudgeError as e:
                    failures.append(f"{futures[fut].key}: {e}")
                bar.update(1)
        if failures:
            kept = f"; {len(self.log.done)} finished results are kept in {self.log.path}, a rerun resumes them" \
                if self.log.path else ""
            raise JudgeError(f"{len(failures)} of {len(todo)} judge requests failed{kept}. First: {failures[0]}")
        return out

    def _one(self, task: _Task, out: dict[str, Any]) -> None:
        try:
            res = self.client.complete(task.messages, parse=task.parse)
        except ChatAPIError as e:
            if "APIConnectionError" in str(e) or "APITimeoutError" in str(e):
                cfg = self.client.config
                raise JudgeUnreachableError(
                    f"cannot reach the judge at {cfg.base_url or 'the OpenAI default URL'} (model {cfg.model!r}): {e}. "
                    "Check --judge.base_url / FAVCHAT_JUDGE_BASE_URL and that the server is running."
                ) from e
            raise JudgeError(str(e)) from e
        self.log.add(task, res.value, res.text)
        out[task.key] = res.value

    # -- VideoChatGPT-style scores --------------------------------------------------------------

    def scores(self, items: Sequence[JudgeItem], criteria: Sequence[str] = (*CRITERIA, "overall")) -> dict[str, Any]:
        """Mean score per criterion (``{"correctness": {"mean", "n"}, ...}``) and per-item scores.

        Consistency is scored only for items with ``question2`` and ``prediction2``.
        """
        unknown = [c for c in criteria if c not in (*CRITERIA, "overall")]
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; known: {[*CRITERIA, 'overall']}")
        _check_ids(items)
        tasks: list[_Task] = []
        for it in items:
            for c in criteria:
                scale = 10 if c == "overall" else self.scale
                f = {"question": it.question, "reference": it.reference, "prediction": it.prediction}
                if c == "consistency":
                    if it.question2 is None or it.prediction2 is None:
                        continue
                    f |= {"question2": it.question2, "prediction2": it.prediction2}
                if c != "overall":
                    f["scale"] = scale
                tasks.append(_Task(f"score/{it.id}/{c}", _messages(f"judge_{c}", **f),
                                   functools.partial(parse_score, scale=scale)))
        values = self._run(tasks, "judge scores")
        per_item: dict[str, dict[str, int]] = {}
        for key, v in values.items():
            item_id, c = _split_key(key)
            per_item.setdefault(item_id, {})[c] = v
        summary: dict[str, Any] = {}
        for c in criteria:
            vals = [s[c] for s in per_item.values() if c in s]
            summary[c] = {"mean": sum(vals) / len(vals) if vals else None, "n": len(vals),
                          "scale": 10 if c == "overall" else self.scale}
        return {"summary": summary, "per_item": per_item,
                "prompts": {c: prompts.digest(f"judge_{c}") for c in criteria}}

    # -- AutoDQ ---------------------------------------------------------------------------------

    def autodq(self, items: Sequence[JudgeItem]) -> dict[str, Any]:
        """Event-based precision / recall / F1 of predictions against references (pooled over items)."""
        _check_ids(items)
        extract = []
        for it in items:
            for side, text in (("ref", it.reference), ("pred", it.prediction)):
                extract.append(_Task(f"autodq-events/{it.id}/{side}", _messages("autodq_extract", text=text), parse_events))
        events = self._run(extract, "AutoDQ events")
        entail = []
        for it in items:
            # precision: prediction events checked against the reference; recall: the other way round.
            for side, ev, text in (("pred", events[f"autodq-events/{it.id}/pred"], it.reference),
                                   ("ref", events[f"autodq-events/{it.id}/ref"], it.prediction)):
                if not ev:
                    continue
                listing = "\n".join(f"{i + 1}. {e}" for i, e in enumerate(ev))
                entail.append(_Task(f"autodq-entail/{it.id}/{side}",
                                    _messages("autodq_entail", text=text, events=listing, count=len(ev)),
                                    functools.partial(parse_entailment, count=len(ev))))
        labels = self._run(entail, "AutoDQ entailment")
        per_item: dict[str, dict[str, Any]] = {}
        tot = {"pred": [0, 0], "ref": [0, 0]}  # side -> [entailed, events]
        for it in items:
            row: dict[str, Any] = {}
            for side in ("pred", "ref"):
                lab = labels.get(f"autodq-entail/{it.id}/{side}", [])
                hit, n = sum(x == "entailment" for x in lab), len(events[f"autodq-events/{it.id}/{side}"])
                tot[side][0] += hit
                tot[side][1] += n
                row[f"{side}_events"], row[f"{side}_entailed"] = n, hit
            per_item[it.id] = row
        p = tot["pred"][0] / tot["pred"][1] if tot["pred"][1] else 0.0
        r = tot["ref"][0] / tot["ref"][1] if tot["ref"][1] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": p, "recall": r, "f1": f1, "per_item": per_item,
                "prompts": {n: prompts.digest(n) for n in ("autodq_extract", "autodq_entail")}}

    # -- EMER -----------------------------------------------------------------------------------

    def emer(self, items: Sequence[JudgeItem]) -> dict[str, Any]:
        """EMER's clue overlap and label overlap (0–10 each, mean over items)."""
        _check_ids(items)
        tasks = [_Task(f"emer/{it.id}/{kind}", _messages(f"emer_{kind}", reference=it.reference, prediction=it.prediction),
                       functools.partial(parse_score, scale=10))
                 for it in items for kind in ("clue", "label")]
        values = self._run(tasks, "EMER overlap")
        per_item: dict[str, dict[str, int]] = {}
        for key, v in values.items():
            item_id, kind = _split_key(key)
            per_item.setdefault(item_id, {})[kind] = v
        n = len(per_item)
        return {"clue_overlap": sum(s["clue"] for s in per_item.values()) / n,
                "label_overlap": sum(s["label"] for s in per_item.values()) / n, "n": n, "per_item": per_item,
                "prompts": {k: prompts.digest(f"emer_{k}") for k in ("clue", "label")}}


def _check_ids(items: Sequence[JudgeItem]) -> None:
    if not items:
        raise ValueError("no items to judge")
    dup = sorted(i for i, n in Counter(it.id for it in items).items() if n > 1)
    if dup:
        raise ValueError(f"duplicate item ids: {dup[:5]}")


def _split_key(key: str) -> tuple[str, str]:
    """'kind/item id/part' -> (item id, part); item ids may hold '/'."""
    item_id, part = key.split("/", 1)[1].rsplit("/", 1)
    return item_id, part
