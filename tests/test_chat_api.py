"""The OpenAI-compatible client against a real local HTTP server: cache, retries, validation, accounting."""

from __future__ import annotations

import itertools
import json

import pytest

from favchat.chat_api import ChatAPIConfig, ChatAPIError, ChatClient, ChatFailure, request_key


def _client(base_url: str, tmp_path, **kw) -> ChatClient:
    cfg = ChatAPIConfig(base_url=base_url, model="stub-model", cache_dir=str(tmp_path / "cache"), backoff_s=0.0, **kw)
    return ChatClient(cfg, sleep=lambda s: None)


def _as_int(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


def test_cached_reply_costs_nothing_on_rerun(openai_stub, tmp_path):
    stub = openai_stub(lambda body: "7")
    msgs = [{"role": "user", "content": "rate this"}]
    first = _client(stub.base_url, tmp_path).complete(msgs, parse=_as_int)
    assert (first.value, first.cached, len(stub.requests)) == (7, False, 1)
    again = _client(stub.base_url, tmp_path)  # a new process would see the same cache folder
    second = again.complete(msgs, parse=_as_int)
    assert (second.value, second.cached, len(stub.requests)) == (7, True, 1)
    assert again.usage.cached == 1 and again.usage.calls == 0


def test_transient_errors_and_malformed_replies_are_retried(openai_stub, tmp_path):
    script = iter([(429, {"error": {"message": "slow down"}}), (500, {"error": {"message": "boom"}}), "seven", "7"])
    stub = openai_stub(lambda body: next(script))
    client = _client(stub.base_url, tmp_path, max_retries=5)
    res = client.complete([{"role": "user", "content": "x"}], parse=_as_int)
    assert res.value == 7 and res.attempts == 4 and len(stub.requests) == 4
    assert client.usage.calls == 4 and client.usage.failed == 0
    # The malformed reply was not cached: the cache holds the accepted one.
    key = request_key("stub-model", [{"role": "user", "content": "x"}], {"temperature": 0.0})
    assert client.cache.get(key)["text"] == "7"


def test_gives_up_after_max_retries(openai_stub, tmp_path):
    stub = openai_stub(lambda body: (503, {"error": {"message": "unavailable"}}))
    client = _client(stub.base_url, tmp_path, max_retries=2)
    with pytest.raises(ChatAPIError, match="gave up after 3 attempts"):
        client.complete([{"role": "user", "content": "x"}])
    assert len(stub.requests) == 3 and client.usage.failed == 1


def test_client_error_is_not_retried(openai_stub, tmp_path):
    stub = openai_stub(lambda body: (400, {"error": {"message": "bad request"}}))
    with pytest.raises(ChatAPIError, match="BadRequestError"):
        _client(stub.base_url, tmp_path, max_retries=4).complete([{"role": "user", "content": "x"}])
    assert len(stub.requests) == 1


def test_unreachable_endpoint_raises_clearly(tmp_path):
    client = _client("http://127.0.0.1:9/v1", tmp_path, max_retries=1, timeout_s=2.0)
    with pytest.raises(ChatAPIError, match="APIConnectionError"):
        client.complete([{"role": "user", "content": "x"}])


def test_map_keeps_order_counts_tokens_and_reports_failures(openai_stub, tmp_path):
    def responder(body):
        text = body["messages"][0]["content"]
        return (500, {"error": {"message": "no"}}) if text == "fail" else f"echo {text}"

    stub = openai_stub(responder)
    client = _client(stub.base_url, tmp_path, max_retries=1, concurrency=3, usd_per_1k_completion=1.0)
    prompts = ["a", "b", "fail", "c"]
    out = client.map([[{"role": "user", "content": p}] for p in prompts], progress=False)
    assert [r.text for r in out if not isinstance(r, ChatFailure)] == ["echo a", "echo b", "echo c"]
    assert isinstance(out[2], ChatFailure) and "gave up" in out[2].error
    assert client.usage.completion_tokens == 6 and client.usage.usd == pytest.approx(0.006)
    assert client.usage.failed == 1


def test_request_key_depends_on_every_part():
    msgs = [{"role": "user", "content": "hi"}]
    keys = {request_key(m, x, p) for m, x, p in itertools.product(
        ["a", "b"], [msgs, [{"role": "user", "content": "ho"}]], [{"temperature": 0.0}, {"temperature": 1.0}])}
    assert len(keys) == 8
    assert request_key("a", msgs, {"t": 1, "u": 2}) == request_key("a", json.loads(json.dumps(msgs)), {"u": 2, "t": 1})


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="concurrency"):
        ChatAPIConfig(concurrency=0)
    with pytest.raises(ValueError, match="max_retries"):
        ChatAPIConfig(max_retries=-1)
