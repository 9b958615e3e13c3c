"""Stage 4 of the dataset pipeline (App. B.3): summaries and QA pairs for every clip.

Two backends:
- ``template`` (the default, offline, free): a summary written from the feature dictionary by rules,
  and 4 QA pairs (attribute, action, emotion, and a yes/no question that is a true negative for half
  the clips);
- ``api``: any OpenAI-compatible chat endpoint through ``favchat.chat_api.ChatClient`` (disk cache, so
  a rerun never pays twice; retries with backoff on timeouts/429/5xx; concurrency limit; token and
  cost accounting). The summary request carries the clip's frames (every 16th, as data URLs) and the
  feature dictionary; the QA request carries the summary. A reply is validated before it is accepted:
  a summary must be prose of enough words that does not contradict the features, and the QA reply
  must match a strict JSON schema. A rejected reply is retried and never cached.

Prompts: ``favchat/prompts/pipeline_{system,summary,qa}.txt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from favchat import prompts
from favchat.chat_api import ChatAPIConfig, ChatAPIError, ChatClient, Messages, image_data_url
from favchat.data.manifest import QA, QA_TYPES
from favchat.data.taxonomy import BY_NAME, LABELS_BY_GROUP, contradicts, features_to_text, mentioned_labels
from favchat.data.video import VideoDecodeError

log = logging.getLogger(__name__)

BACKENDS = ("template", "api")


@dataclass
class AnnotateConfig:
    """Which writer produces the texts, and what a valid text is."""

    backend: str = "template"  # "template" (offline) | "api" (an OpenAI-compatible endpoint)
    api: ChatAPIConfig = field(default_factory=ChatAPIConfig)
    num_qa: int = 4  # App. B.3: 4 QA pairs per summary
    min_summary_words: int = 20
    check_contradictions: bool = True  # reject a summary that contradicts the feature dictionary
    max_frames: int = 8  # frames sent with a summary request (every 16th frame, thinned evenly)
    frame_side: int = 256  # longer side of a frame sent to the API

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.num_qa < 1 or self.max_frames < 1 or self.min_summary_words < 1:
            raise ValueError("need num_qa >= 1, max_frames >= 1 and min_summary_words >= 1")


@dataclass
class ClipJob:
    """What a writer needs to know of one clip."""

    id: str
    video: str
    frame_range: tuple[int, int]
    fps: float
    features: dict[str, list[str]]  # the feature dictionary (group -> labels)
    events: list[dict[str, Any]] = field(default_factory=list)  # timed labels {label, start, end} (imported sets)


# ---------------------------------------------------------------------------------------------
# Validation of model replies


def parse_summary(text: str, features: dict[str, list[str]], cfg: AnnotateConfig) -> str:
    """The summary text, or ``ValueError`` saying why the reply is unusable."""
    s = text.strip()
    if not s:
        raise ValueError("empty reply")
    if s[0] in "{[<#`" or s.startswith(("-", "*", "1.")):
        raise ValueError("expected a plain prose paragraph, got markup, a list or JSON")
    words = len(s.split())
    if words < cfg.min_summary_words:
        raise ValueError(f"summary too short ({words} words < {cfg.min_summary_words})")
    if cfg.check_contradictions:
        asserted, _ = mentioned_labels(s)
        have = [n for g in features.values() for n in g]
        # Two exclusive labels that are both features are shown at different times (a clip that turns from
        # neutral to happy): naming either is no contradiction.
        clash = sorted((a, b) for a in asserted for b in have if contradicts(a, b) and a not in have)
        if clash:
            raise ValueError(f"summary contradicts the features: {', '.join(f'{a} vs {b}' for a, b in clash)}")
    return s


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_qa(text: str, num_qa: int) -> list[QA]:
    """Strict schema: ``{"qa": [{"question": str ending in "?", "answer": str, "type": QA type}] * num_qa}``."""
    s = text.strip()
    if m := _FENCE.match(s):  # models often fence JSON; the content must still be exact
        s = m.group(1)
    try:
        d = json.loads(s)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e.msg} at column {e.colno}") from e
    if not isinstance(d, dict) or set(d) != {"qa"} or not isinstance(d["qa"], list):
        raise ValueError('expected an object with exactly one key "qa" holding a list')
    if len(d["qa"]) != num_qa:
        raise ValueError(f"expected {num_qa} QA pairs, got {len(d['qa'])}")
    out: list[QA] = []
    for i, q in enumerate(d["qa"]):
        if not isinstance(q, dict) or set(q) != {"question", "answer", "type"}:
            raise ValueError(f"qa[{i}] must have exactly the keys question, answer, type")
        if not all(isinstance(q[k], str) and q[k].strip() for k in ("question", "answer", "type")):
            raise ValueError(f"qa[{i}]: question, answer and type must be non-empty strings")
        if not q["question"].strip().endswith("?"):
            raise ValueError(f"qa[{i}]: the question does not end with '?'")
        if q["type"] not in QA_TYPES:
            raise ValueError(f"qa[{i}]: type must be one of {QA_TYPES}, got {q['type']!r}")
        out.append(QA(q["question"].strip(), q["answer"].strip(), q["type"]))
    if len({q.question.lower() for q in out}) != len(out):
        raise ValueError("duplicate questions")
    return out


# ---------------------------------------------------------------------------------------------
# The offline template writer


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _appearance(features: dict[str, list[str]]) -> tuple[str, list[str]]:
    names = features.get("appearance", [])
    subject = ("a young " if "young" in names else "a ") + ("man" if "male" in names else "person")
    rest = [BY_NAME[n].phrase for n in names if n not in ("male", "young", "blurry")]
    return subject, rest


def _emotion_order(job: ClipJob) -> list[str]:
    """The clip's emotions in the order their events start (label order for emotions without an event)."""
    start: dict[str, int] = {}
    for e in job.events:
        start.setdefault(e["label"], e["start"])
    return sorted(job.features.get("emotion", []), key=lambda n: start.get(n, float("inf")))


def _emotion_text(job: ClipJob) -> str:
    """"happy" for one emotion; "neutral at first, then happy" for a clip whose emotion changes."""
    emo = [BY_NAME[n].phrase for n in _emotion_order(job)]
    return emo[0] if len(emo) == 1 else f"{emo[0]} at first, then {', then '.join(emo[1:])}"


def _features_text(job: ClipJob) -> str:
    """The feature dictionary as text for a prompt, with the emotions' timing when the labels have it."""
    text = features_to_text(job.features)
    timed = [e for e in sorted(job.events, key=lambda e: e["start"]) if e["label"] in BY_NAME]
    if timed:
        fps = job.fps or 25.0
        text += "\nOver time: " + ", then ".join(
            f"{BY_NAME[e['label']].phrase} ({e['start'] / fps:.1f}–{e['end'] / fps:.1f} s)" for e in timed)
    return text


def template_summary(job: ClipJob) -> str:
    f = job.features
    subject, looks = _appearance(f)
    seconds = (job.frame_range[1] - job.frame_range[0]) / (job.fps or 25.0)
    parts = [f"The clip shows {subject}" + (f" with {_join(looks)}." if looks else ", seen face-on.")]
    if "blurry" in f.get("appearance", []):
        parts.append("The footage is somewhat blurry.")
    acts = [BY_NAME[n].phrase for n in f.get("action", [])]
    parts.append(f"Over about {seconds:.1f} seconds the person {_join(acts)}." if acts
                 else f"Over about {seconds:.1f} seconds the person shows no distinct facial action.")
    emo = f.get("emotion", [])
    parts.append(f"The face looks {_emotion_text(job)}{' throughout' if len(emo) == 1 else ''}." if emo
                 else "No clear emotion shows on the face.")
    return " ".join(parts)


def template_qa(job: ClipJob, summary: str, num_qa: int) -> list[QA]:
    f = job.features
    subject, looks = _appearance(f)
    acts = [BY_NAME[n].phrase for n in f.get("action", [])]
    qa = [
        QA("What does the person look like?",
           f"It is {subject}" + (f" with {_join(looks)}." if looks else "."), "attribute"),
        QA("What does the person do during the clip?",
           f"The person {_join(acts)}." if acts else "The person shows no distinct facial action.", "action"),
        QA("What emotion does the face show?", f"The face looks {_emotion_text(job)}." if f.get("emotion") else
           "No clear emotion shows on the face.", "emotion"),
    ]
    # A yes/no question, a true negative for about half the clips (chosen by the clip id, so reruns agree).
    h = int(hashlib.sha1(job.id.encode()).hexdigest()[:8], 16)
    have = f.get("appearance", [])
    if have:
        lab = have[h % len(have)]
        partners = [n for n in LABELS_BY_GROUP["appearance"] if contradicts(lab, n)]
        if partners and h % 2:
            other = partners[(h // 2) % len(partners)]
            qa.append(QA(f"Does the person have {BY_NAME[other].phrase}?",
                         f"No, the person has {BY_NAME[lab].phrase}.", "yesno"))
        else:
            qa.append(QA(f"Does the person have {BY_NAME[lab].phrase}?", "Yes.", "yesno"))
    qa.append(QA("Describe the clip.", summary, "description"))
    return qa[:num_qa] if len(qa) >= num_qa else qa + [QA(f"Describe the clip ({i + 1}).", summary, "description")
                                                       for i in range(num_qa - len(qa))]


# ---------------------------------------------------------------------------------------------
# The API writer


def summary_messages(job: ClipJob, cfg: AnnotateConfig) -> Messages:
    """System + user message with the rendered prompt and the clip's frames as data URLs."""
    from favchat.data.pipeline.extract import ExtractorConfig, clip_frame_indices
    from favchat.data.video import read_frames

    start, end = job.frame_range
    idx = clip_frame_indices(start, end, ExtractorConfig(frame_stride=16, max_frames=cfg.max_frames))
    frames = read_frames(job.video, idx, max_side=cfg.frame_side)  # (K, h, w, 3)
    text = prompts.render("pipeline_summary", num_frames=end - start, seconds=f"{(end - start) / (job.fps or 25.0):.1f}",
                          features=_features_text(job), min_words=cfg.min_summary_words)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": image_data_url(fr)}} for fr in frames]
    return [{"role": "system", "content": prompts.load("pipeline_system")}, {"role": "user", "content": content}]


def qa_messages(job: ClipJob, summary: str, cfg: AnnotateConfig) -> Messages:
    text = prompts.render("pipeline_qa", summary=summary, features=_features_text(job), num_qa=cfg.num_qa)
    return [{"role": "system", "content": prompts.load("pipeline_system")}, {"role": "user", "content": text}]


class Annotator:
    """Writes summaries and QA pairs with the configured backend; ``client`` holds the API usage."""

    def __init__(self, cfg: AnnotateConfig):
        self.cfg = cfg
        self.client = ChatClient(cfg.api) if cfg.backend == "api" else None

    def summarize(self, job: ClipJob) -> str:
        if self.client is None:
            return template_summary(job)
        return self.client.complete(summary_messages(job, self.cfg),
                                    parse=lambda t: parse_summary(t, job.features, self.cfg)).value

    def qa(self, job: ClipJob, summary: str) -> list[QA]:
        if self.client is None:
            return template_qa(job, summary, self.cfg.num_qa)
        return self.client.complete(qa_messages(job, summary, self.cfg),
                                    parse=lambda t: parse_qa(t, self.cfg.num_qa)).value

    def run(self, jobs: Iterable[Any], fn: Callable[[Any], Any]) -> Iterator[tuple[Any, Any | Exception]]:
        """Apply ``fn`` to every job, at most ``concurrency`` at once; yield (job, result or error) as each ends.

        An error is a ``ChatAPIError`` (given up after retries) or a ``VideoDecodeError`` (frames unreadable).

        Results come back to the caller's thread, which writes the state file, so a kill loses at most
        the requests in flight (and those are in the API cache when they had completed).
        """
        jobs = list(jobs)
        if self.client is None:
            for job in jobs:
                yield job, fn(job)
            return
        it = iter(jobs)
        with ThreadPoolExecutor(max_workers=self.cfg.api.concurrency) as pool:
            running: dict[Future, tuple[int, Any]] = {}  # future -> (submission order, job)
            for order in range(len(jobs) + 1):
                while len(running) < self.cfg.api.concurrency and (job := next(it, None)) is not None:
                    running[pool.submit(fn, job)] = (order, job)
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: running[f][0]):
                    _, job = running.pop(fut)
                    try:
                        yield job, fut.result()
                    except (ChatAPIError, VideoDecodeError) as e:
                        yield job, e
