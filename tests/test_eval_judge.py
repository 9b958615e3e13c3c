"""The LLM judge against a real local OpenAI-compatible HTTP server (``openai_stub``) with deterministic replies."""

from __future__ import annotations

import json
import re
import socket

import pytest

from favchat.chat_api import ChatAPIConfig, ChatClient
from favchat.eval.judge import CRITERIA, Judge, JudgeError, JudgeItem, JudgeUnreachableError, parse_score

MARKERS = {"FACTUAL ACCURACY": "correctness", "DETAIL ORIENTATION": "detail", "CONTEXTUAL UNDERSTANDING": "context",
           "TEMPORAL UNDERSTANDING": "temporal", "CONSISTENCY": "consistency", "OVERALL QUALITY": "overall",
           "emotion-related CLUES": "clue", "final emotional state": "label"}
# A deterministic score per (criterion, prediction): the test computes the expected means from it.
BASE = {"correctness": 1, "detail": 2, "context": 3, "temporal": 0, "consistency": 4, "overall": 7, "clue": 6, "label": 8}


def user_text(body):
    return body["messages"][-1]["content"]


def field(text, name):
    return re.search(rf"^{name}: (.*)$", text, re.M).group(1)


def expected_score(criterion, prediction, scale=5):
    bonus = 1 if "smiles" in prediction else 0
    return min(BASE[criterion] + bonus, 10 if criterion in ("overall", "clue", "label") else scale)


def kind(text):
    return next(v for k, v in MARKERS.items() if k in text)


def make_responder(malformed_first=True):
    """Scores by criterion; the first request of each criterion gets a malformed reply (to be rejected)."""
    seen: set[str] = set()

    def respond(body):
        text = user_text(body)
        k = kind(text)
        if malformed_first and k not in seen:
            seen.add(k)
            return {"correctness": "Score: 4", "detail": '{"score": 4.5}', "context": '{"score": 99}',
                    "temporal": "{'score': 3}", "consistency": '{"score": 2, "why": "x"}'}.get(k, "four")
        scale = int(re.search(r"from 0 to (\d+)", text).group(1))
        line = {"consistency": "Predicted answer to question 1", "clue": "Predicted explanation",
                "label": "Predicted explanation"}.get(k, "Predicted answer")
        pred = field(text, line)
        return json.dumps({"score": expected_score(k, pred, scale)})

    return respond


ITEMS = [
    JudgeItem("q0", "What does the man do?", "He smiles.", "He smiles widely.", "Rephrased q0?", "He smiles."),
    JudgeItem("q1", "What colour is the hair?", "Black.", "Brown.", "Rephrased q1?", "Brown hair."),
    JudgeItem("q2", "Does she blink?", "Yes, twice.", "No."),  # no rephrased answer: no consistency score
]


def judge_for(stub, tmp_path, results=True, cache=False, scale=5, **cfg):
    config = ChatAPIConfig(base_url=stub.base_url, model="judge-stub", backoff_s=0.0, max_retries=3, concurrency=3,
                           cache_dir=str(tmp_path / "cache") if cache else None, **cfg)
    return Judge(ChatClient(config), scale=scale, results_path=tmp_path / "judge.jsonl" if results else None,
                 progress=False)


def test_parse_score_is_strict():
    assert parse_score(' {"score": 3}\n', 5) == 3
    for bad in ("3", "Score: 3", '{"score": 3.0}', '{"score": true}', '{"score": 6}', '{"score": 3, "x": 1}',
                '```json\n{"score": 3}\n```', "{'score': 3}"):
        with pytest.raises(ValueError):
            parse_score(bad, 5)


@pytest.mark.parametrize("scale", [5, 10])
def test_scores_each_criterion_with_retries_on_malformed(openai_stub, tmp_path, scale):
    stub = openai_stub(make_responder())
    res = judge_for(stub, tmp_path, scale=scale).scores(ITEMS)
    s = res["summary"]
    for c in (*CRITERIA, "overall"):
        items = [it for it in ITEMS if c != "consistency" or it.prediction2]
        want = [expected_score(c, it.prediction, scale) for it in items]
        assert s[c]["n"] == len(items) and s[c]["mean"] == pytest.approx(sum(want) / len(want)), c
        assert s[c]["scale"] == (10 if c == "overall" else scale)
    assert "consistency" not in res["per_item"]["q2"]
    # 3 items x 5 criteria + 2 consistency requests, plus one rejected reply per criterion.
    assert len(stub.requests) == 3 * 5 + 2 + 6
    prompts_sent = [user_text(b) for b in stub.requests]
    assert sum("TEMPORAL UNDERSTANDING" in p for p in prompts_sent) == 4  # its own prompt, one per item + 1 retry
    assert all(f"from 0 to {scale}" in p for p in prompts_sent if "FACTUAL ACCURACY" in p)


def test_rerun_costs_nothing_through_the_cache(openai_stub, tmp_path):
    stub = openai_stub(make_responder(malformed_first=False))
    first = judge_for(stub, tmp_path, results=False, cache=True).scores(ITEMS)
    n = len(stub.requests)
    again = judge_for(stub, tmp_path, results=False, cache=True)
    assert again.scores(ITEMS)["summary"] == first["summary"]
    assert len(stub.requests) == n and again.client.usage.cached == n


def test_partial_results_kept_and_resumed(openai_stub, tmp_path):
    good = make_responder(malformed_first=False)

    def failing(body):  # q2's answer makes the server refuse (a non-transient 400)
        if "Does she blink?" in user_text(body):
            return 400, {"error": {"message": "bad request"}}
        return good(body)

    stub = openai_stub(failing)
    with pytest.raises(JudgeError, match=r"5 of 17 judge requests failed.*kept in .*judge.jsonl"):
        judge_for(stub, tmp_path).scores(ITEMS)
    kept = (tmp_path / "judge.jsonl").read_text().splitlines()
    assert len(kept) == 2 * 5 + 2  # everything but q2's five criteria
    stub2 = openai_stub(good)
    res = judge_for(stub2, tmp_path).scores(ITEMS)
    assert len(stub2.requests) == 5 and all("Does she blink?" in user_text(b) for b in stub2.requests)
    assert res["summary"]["overall"]["n"] == 3
    stub3 = openai_stub(good)
    judge_for(stub3, tmp_path).scores(ITEMS)
    assert stub3.requests == []
    # A changed prediction is a new request, not a stale result.
    changed = [ITEMS[0], ITEMS[1], JudgeItem("q2", "Does she blink?", "Yes, twice.", "Yes.")]
    judge_for(stub3, tmp_path).scores(changed)
    assert len(stub3.requests) == 5


def test_unreachable_judge_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = ChatAPIConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", backoff_s=0.0, max_retries=1,
                           timeout_s=2.0)
    judge = Judge(ChatClient(config), results_path=tmp_path / "j.jsonl", progress=False)
    with pytest.raises(JudgeUnreachableError, match=rf"cannot reach the judge at http://127.0.0.1:{port}/v1"):
        judge.scores(ITEMS)


def autodq_responder(body):
    text = user_text(body)
    if text.startswith("Extract the events"):
        desc = field(text, "Description")
        return json.dumps([s.strip() + "." for s in desc.split(".") if s.strip()])
    desc = field(text, "Description").lower()
    events = re.findall(r"^\d+\. (.*)$", text, re.M)
    if "frowns" in text and not getattr(autodq_responder, "tripped", False):
        autodq_responder.tripped = True
        return json.dumps(["entailment"])  # wrong length: rejected and retried
    return json.dumps(["entailment" if e.lower().rstrip(".") in desc else "neutral" for e in events])


def test_autodq_precision_recall_f1(openai_stub, tmp_path):
    stub = openai_stub(autodq_responder)
    items = [JudgeItem("v0", "Describe.", "The man smiles. The man nods. The man wears glasses.",
                       "The man smiles. The man frowns."),
             JudgeItem("v1", "Describe.", "The woman yawns.", "The woman yawns. The woman blinks.")]
    res = judge_for(stub, tmp_path).autodq(items)
    # prediction events entailed by the reference: smiles, yawns (2 of 4); reference events entailed: smiles, yawns (2 of 4)
    assert res["precision"] == pytest.approx(2 / 4) and res["recall"] == pytest.approx(2 / 4)
    assert res["f1"] == pytest.approx(0.5)
    assert res["per_item"]["v0"] == {"pred_events": 2, "pred_entailed": 1, "ref_events": 3, "ref_entailed": 1}
    n = len(stub.requests)
    assert n == 4 + 4 + 1  # extraction x4, entailment x4, one rejected reply
    judge_for(stub, tmp_path).autodq(items)
    assert len(stub.requests) == n  # resumed from the results file


def test_emer_overlaps(openai_stub, tmp_path):
    stub = openai_stub(make_responder(malformed_first=False))
    items = [JudgeItem("e0", "Why?", "She smiles: happy.", "She smiles, so she is happy."),
             JudgeItem("e1", "Why?", "He frowns: angry.", "He looks calm.")]
    res = judge_for(stub, tmp_path).emer(items)
    assert res["clue_overlap"] == pytest.approx((7 + 6) / 2) and res["label_overlap"] == pytest.approx((9 + 8) / 2)
    assert res["n"] == 2 and len(stub.requests) == 4
