"""``favchat serve`` as users run it: the real server (``python -m favchat serve --port 0``) in a subprocess on
127.0.0.1, talked to over HTTP with the official ``openai`` client, with raw HTTP for the bad inputs, and through
its web page in headless Chromium.

The checkpoint is the tiny preset with random weights and an untied LM head (tied, a random model repeats its
last token, a newline; untied, greedy answers are visible text): the answers mean nothing, the serving is tested.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from favchat.data.synth.generate import SynthConfig, render_clip
from favchat.data.video import write_video
from model_helpers import frames

KEY = "test-key-0123456789"
MODEL = "stage3"  # the served id of runs/demo/stage3/final, the layout docs/serve.md's examples use
ROOT = Path(__file__).resolve().parents[1]
MAX_PENDING = 4
LIMITS = ["--max_video_mb", "0.25", "--max_duration_s", "3", "--max_frames", "40", "--max_side", "128",
          "--max_pending", str(MAX_PENDING), "--max_tokens", "900", "--default_max_tokens", "8"]
CLIPS = SynthConfig(min_frames=16, max_frames=16, min_size=64, max_size=64)
QUESTION = "What colour is the hair?"
# The flags the closed network needs (otherwise Chromium stalls reaching its services), and a fresh profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Where the server and docs/serve.md's examples run: a checkpoint and clips in the demo's layout."""
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def checkpoint(workdir) -> Path:
    import torch

    from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor

    path = workdir / "runs/demo/stage3/final"
    cfg = FaVChatConfig.from_preset("tiny")
    cfg.text_config.tie_word_embeddings = False
    torch.manual_seed(2)
    FaVChatForConditionalGeneration(cfg).save_pretrained(path)
    FaVChatProcessor.from_config(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def videos(workdir) -> dict[str, Path]:
    """Good FaceSynth clips in the allowed root, and one of each kind of bad video."""
    root, outside = workdir / "runs/demo/data/videos", workdir / "outside"  # root: made by the server fixture
    v = {f"clip{i}": write_video(root / f"clip{i}.mp4", render_clip(CLIPS, i).frames, fps=CLIPS.fps)
         for i in range(4)}
    v["docs"] = write_video(root / "fs-000008.mp4", render_clip(CLIPS, 8).frames, fps=CLIPS.fps)
    v["long"] = write_video(root / "long.mp4", frames(40, 64), fps=10)  # 4 s, 40 frames
    v["many_frames"] = write_video(root / "many.mp4", frames(48, 64), fps=30)  # 1.6 s, 48 frames
    v["big"] = write_video(root / "big.mp4", frames(4, 160), fps=12)  # 160 px a side
    v["zero"] = root / "zero.mp4"
    v["zero"].write_bytes(b"")
    v["text"] = root / "notes.mp4"
    v["text"].write_text("not a video\n" * 20)
    v["truncated"] = root / "truncated.mp4"
    v["truncated"].write_bytes(v["clip0"].read_bytes()[: v["clip0"].stat().st_size * 3 // 5])
    v["secret"] = write_video(outside / "secret.mp4", render_clip(CLIPS, 7).frames, fps=CLIPS.fps)
    v["link_out"] = root / "link.mp4"
    v["link_out"].symlink_to(v["secret"])
    v["link_in"] = root / "alias.mp4"
    v["link_in"].symlink_to(v["clip2"])
    return v


@dataclass
class Server:
    url: str
    host: str
    port: int
    log: Path


def docs_blocks(language: str, section: str | None = None) -> list[str]:
    """docs/serve.md's code blocks in ``language``, in the whole page or in one ``## section``."""
    text = (ROOT / "docs/serve.md").read_text()
    if section is not None:
        text = text.split(f"\n## {section}\n")[1].split("\n## ")[0]
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


@pytest.fixture(scope="module")
def server(checkpoint, workdir, request):
    log = workdir / "server.log"
    (workdir / "runs/demo/data/videos").mkdir(parents=True, exist_ok=True)  # the allowed root, filled while the server starts
    env = os.environ | {"FAVCHAT_API_KEY": KEY}
    # docs/serve.md's command as written, on a free port, with a key and small limits
    command = shlex.split(docs_blocks("bash")[0])
    assert command[:2] == ["favchat", "serve"]
    favchat = Path(sys.executable).with_name("favchat")
    cmd = [str(favchat), *command[1:], "--port", "0", "--api_key_env", "FAVCHAT_API_KEY", *LIMITS]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=workdir)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    request.getfixturevalue("videos")
    try:
        line = lines.get(timeout=120)  # the first line says where it listens
    except queue.Empty:
        proc.kill()
        pytest.fail(f"favchat serve printed nothing in 120 s; its log:\n{log.read_text()}")
    assert line.startswith(f"favchat serve: {MODEL} on http://127.0.0.1:"), (line, log.read_text())
    url = line.split(" on ")[1].split("/ ")[0]
    port = int(url.rsplit(":", 1)[1])
    yield Server(url, "127.0.0.1", port, log)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("favchat serve did not stop within 20 s of SIGTERM")
    text = log.read_text()
    # Bad requests were answered with 4xx, never with a failure of the server.
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


def client(server: Server, **kw):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, **kw)


def data_url(path: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def user(url: str, text: str = QUESTION) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": text}]}


def request(server: Server, method: str, path: str, body: Any = None, key: str | None = KEY,
            headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """Raw HTTP: (status, headers (case-insensitive), JSON body)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {}) | (headers or {})
    conn.request(method, path, body=data, headers=h)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, response.headers, json.loads(raw) if raw else None


def health(server: Server) -> dict[str, Any]:
    return request(server, "GET", "/health", key=None)[2]


def good_request_works(server: Server, videos) -> None:
    status, _, body = request(server, "POST", "/v1/chat/completions",
                              {"model": MODEL, "max_tokens": 1, "messages": [user(data_url(videos["clip0"]))]})
    assert status == 200 and body["choices"][0]["message"]["content"], body


# ---------------------------------------------------------------------------------------------- the API
def test_openai_client_answers_streaming_and_not(server, videos):
    c = client(server)
    assert [m.id for m in c.models.list()] == [MODEL]
    before = health(server)["cache"]
    messages = [user(data_url(videos["clip1"]))]
    first = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    text = first.choices[0].message.content
    assert text and first.choices[0].finish_reason in ("stop", "length")
    assert first.usage.completion_tokens <= 12 and first.usage.prompt_tokens > 8  # N_q video tokens included
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    ext = first.model_extra["favchat"]
    w = ext["adapter_weights"]
    assert 0 < w["w_g"] < 1 and w["w_g"] + w["w_f"] == pytest.approx(1, abs=1e-5)
    assert ext["video"]["cached"] is False and len(ext["video"]["sha256"]) == 64

    stream = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, stream=True,
                                       stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == text  # greedy: the same answer, in pieces
    assert chunks[0].choices[0].delta.role == "assistant"
    last = [ch for ch in chunks if ch.choices][-1]  # the finish, with the favchat field
    assert last.choices[0].finish_reason == first.choices[0].finish_reason
    assert last.model_extra["favchat"]["video"]["cached"] is True
    assert last.model_extra["favchat"]["adapter_weights"] == pytest.approx(w)
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
    after = health(server)["cache"]
    assert (after["misses"] - before["misses"], after["hits"] - before["hits"]) == (1, 1)  # towers ran once


def test_follow_up_reuses_the_video_and_sampling_is_honoured(server, videos):
    c = client(server)
    url = f"file://{videos['clip2']}"

    def ask(messages, **kw):
        r = c.chat.completions.create(model=MODEL, messages=messages, **kw)
        return r.choices[0].message.content, r

    first, r1 = ask([user(url)], max_tokens=6)
    follow = [user(url), {"role": "assistant", "content": first}, {"role": "user", "content": "Does the person smile?"}]
    second, r2 = ask(follow, max_tokens=6)
    assert r2.model_extra["favchat"]["video"] == r1.model_extra["favchat"]["video"] | {"cached": True}
    assert r2.usage.prompt_tokens > r1.usage.prompt_tokens  # the history is in the prompt
    # The same video bytes by another route (an upload, a link inside the root) hit the same cache entry.
    alias, r3 = ask([user(f"file://{videos['link_in']}")], max_tokens=6)
    assert alias == first and r3.model_extra["favchat"]["video"]["cached"] is True

    sampled = [ask([user(url)], max_tokens=10, temperature=1.0, seed=s)[0] for s in (5, 5, 6)]
    assert sampled[0] == sampled[1] != sampled[2]
    # top_p keeping only the most likely token is greedy decoding
    assert ask([user(url)], max_tokens=6, temperature=1.0, top_p=1e-6, seed=9)[0] == first
    text, r = ask([user(url)], max_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"


def test_concurrent_clients_get_their_own_answers(server, videos):
    jobs = [(name, q) for name in ("clip0", "clip1", "clip3") for q in (QUESTION, "Does the person smile?")]
    jobs = jobs[:MAX_PENDING]

    def streamed(job):
        name, q = job
        stream = client(server).chat.completions.create(
            model=MODEL, messages=[user(data_url(videos[name]), q)], max_tokens=10, stream=True)
        return "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)

    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(streamed, jobs))
    alone = [streamed(job) for job in jobs]
    assert together == alone and all(together)
    assert health(server)["pending"] == 0


# ---------------------------------------------------------------------------------------------- bad input
def bad_cases(videos) -> dict[str, tuple[Any, dict[str, Any], int, str]]:
    """{name: (body, request options, status, error code)}."""
    root = videos["clip0"].parent
    ok = data_url(videos["clip0"])

    def chat(url=ok, messages=None, **kw):
        return {"model": MODEL, "max_tokens": 4, "messages": messages or [user(url)], **kw}

    big = b"\0" * 300_000  # over the 0.25 MiB video limit
    two = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": ok}},
                                        {"type": "video_url", "video_url": {"url": ok}},
                                        {"type": "text", "text": QUESTION}]}]
    return {
        "missing key": (chat(), {"key": None}, 401, "missing_api_key"),
        "wrong key": (chat(), {"key": "nope"}, 401, "invalid_api_key"),
        "not json": (b'{"model": ', {}, 400, "invalid_json"),
        "no messages": ({"model": MODEL}, {}, 400, "invalid_request"),
        "unknown model": (chat() | {"model": "gpt-4o"}, {}, 404, "model_not_found"),
        "no video": (chat(messages=[{"role": "user", "content": QUESTION}]), {}, 400, "missing_video"),
        "two videos in a message": (chat(messages=two), {}, 400, "too_many_videos"),
        "image part": (chat(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": ok}}, {"type": "text", "text": QUESTION}]}]),
            {}, 400, "unsupported_content"),
        "system message": (chat(messages=[{"role": "system", "content": "Be brief."}, user(ok)]), {}, 400,
                           "invalid_messages"),
        "http url": (chat("http://127.0.0.1:9/clip.mp4"), {}, 400, "invalid_video_url"),
        "bad base64": (chat("data:video/mp4;base64,@@@not-base64@@@"), {}, 400, "invalid_video_url"),
        "upload over the size limit": (chat("data:video/mp4;base64," + base64.b64encode(big).decode()), {}, 413,
                                       "video_too_big"),
        "body over the size limit": (b"x" * (2 * 2**20), {}, 413, "request_too_large"),
        "path outside the roots": (chat(f"file://{videos['secret']}"), {}, 403, "path_not_allowed"),
        "dot-dot out of the root": (chat(f"file://{root}/../outside/secret.mp4"), {}, 403, "path_not_allowed"),
        "symlink out of the root": (chat(f"file://{videos['link_out']}"), {}, 403, "path_not_allowed"),
        "missing file": (chat(f"file://{root}/nope.mp4"), {}, 400, "video_not_found"),
        "zero-byte file": (chat(f"file://{videos['zero']}"), {}, 400, "unreadable_video"),
        "zero-byte upload": (chat("data:video/mp4;base64,"), {}, 400, "unreadable_video"),
        "text named .mp4": (chat(f"file://{videos['text']}"), {}, 400, "unreadable_video"),
        "text uploaded": (chat(data_url(videos["text"])), {}, 400, "unreadable_video"),
        "truncated video": (chat(data_url(videos["truncated"])), {}, 400, "unreadable_video"),
        "video too long": (chat(data_url(videos["long"])), {}, 400, "video_too_long"),
        "too many frames": (chat(data_url(videos["many_frames"])), {}, 400, "video_too_many_frames"),
        "resolution too high": (chat(data_url(videos["big"])), {}, 400, "video_resolution_too_high"),
        "max_tokens over the limit": (chat(max_tokens=5000), {}, 400, "max_tokens_too_large"),
        "temperature out of range": (chat(temperature=3), {}, 400, "invalid_request"),
        "unsupported stop": (chat(stop=["\n"]), {}, 400, "unsupported_parameter"),
        "n > 1": (chat(n=2), {}, 400, "invalid_request"),
    }


def test_every_bad_input_gets_its_4xx_and_the_server_answers_the_next(server, videos):
    failures = []
    for name, (body, options, status, code) in bad_cases(videos).items():
        got, _, reply = request(server, "POST", "/v1/chat/completions", body, **options)
        error = (reply or {}).get("error", {})
        if got != status or error.get("code") != code or not error.get("message"):
            failures.append(f"{name}: expected {status} {code}, got {got} {reply}")
        assert "Traceback" not in json.dumps(reply) and "File \"" not in json.dumps(reply), (name, reply)
        good_request_works(server, videos)
    assert not failures, "\n".join(failures)
    # The page's helpers are behind the key too, and get the same checks.
    assert request(server, "GET", "/v1/favchat/videos", key=None)[0] == 401
    status, _, reply = request(server, "POST", "/v1/favchat/frames", {"video_url": {"url": f"file://{videos['zero']}"}})
    assert status == 400 and reply["error"]["code"] == "unreadable_video"
    assert request(server, "GET", "/no/such/route")[0] == 404


def test_full_queue_answers_503_and_a_client_that_leaves_stops_its_generation(server, videos):
    body = json.dumps({"model": MODEL, "max_tokens": 900, "stream": True,
                       "messages": [user(data_url(videos["clip0"]))]}).encode()
    before = health(server)
    streams, responses = [], []
    try:
        for _ in range(MAX_PENDING):
            conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
            streams.append(conn)
            conn.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}"})
            responses.append(conn.getresponse())
            assert responses[-1].status == 200  # the headers come before the model's turn
        status, headers, reply = request(server, "POST", "/v1/chat/completions", body)
        assert status == 503 and reply["error"]["code"] == "server_busy" and int(headers["Retry-After"]) >= 1
        assert health(server)["pending"] == MAX_PENDING
        first = responses[0]
        assert b'"role": "assistant"' in first.readline() and first.readline() == b"\n"  # sent at once
        assert b'"delta": {"content": "' in first.readline()  # the first one is answering; the others wait
    finally:
        for conn in streams:
            conn.close()  # the clients leave mid-answer
    deadline = time.monotonic() + 10
    while health(server)["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    now = health(server)
    assert now["pending"] == 0
    time.sleep(0.5)
    after = health(server)
    assert after["tokens_generated"] == now["tokens_generated"], "generation went on after the clients left"
    # Each left before its 900 tokens: the one answering stopped at its next token, the waiting ones never ran.
    assert after["tokens_generated"] - before["tokens_generated"] < 900
    assert after["requests"]["cancelled"] - before["requests"].get("cancelled", 0) == MAX_PENDING
    good_request_works(server, videos)


def test_docs_examples_run_as_written(server, workdir):
    """docs/serve.md's curl and openai-client examples, against the server (its address put in)."""
    env = os.environ | {"FAVCHAT_API_KEY": KEY}
    examples = ([["bash", "-euo", "pipefail", "-c", b] for b in docs_blocks("bash", "Calling it")]
                + [[sys.executable, "-c", b] for b in docs_blocks("python", "Calling it")])
    # what each prints: health and models; an answer; a stream; an answer, its weights and a streamed follow-up
    expected = ['"status":"ok"', '"object":"chat.completion"', "data: [DONE]", "'w_g': 0."]
    assert len(examples) == len(expected)
    for cmd, shows in zip(examples, expected, strict=True):
        cmd[-1] = cmd[-1].replace("127.0.0.1:8000", f"{server.host}:{server.port}")
        run = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and shows in run.stdout, (cmd[-1], run.stdout, run.stderr)
        assert '"error"' not in run.stdout, (cmd[-1], run.stdout)


# ---------------------------------------------------------------------------------------------- the page
def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        reason = "Debian's chromium is not installed (apt-get install -y chromium): the web page is not tested"
        if os.environ.get("FAVCHAT_BROWSER_TESTS") == "required":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def test_web_page_uploads_a_clip_and_streams_answers(server, videos, tmp_path):
    executable = chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=executable,
                                                       headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            expect(page.locator("#model")).to_have_text(MODEL)
            page.fill("#key", KEY)
            page.press("#key", "Tab")  # the key's change event lists the server's videos
            options = page.locator("#pick option")
            expect(options).to_have_count(1 + 12)  # "—" and the root's video files, but the link that leaves it
            assert "videos/alias.mp4" in options.all_text_contents() and "videos/link.mp4" not in options.all_text_contents()
            page.set_input_files("#upload", str(videos["clip3"]))
            expect(page.locator("#frames img")).to_have_count(4)
            expect(page.locator("#video-info")).to_contain_text("64×64, 16 frames")

            answers = page.locator("#conversation .answer")
            for i, question in enumerate([QUESTION, "Does the person smile?"]):
                page.fill("#question", question)
                page.click("#send")
                expect(answers.nth(i)).to_have_attribute("data-state", "done", timeout=30_000)
            page.screenshot(path=str(tmp_path / "page.png"))
            texts = [answers.nth(i).text_content() for i in range(2)]
            chunks = [int(answers.nth(i).get_attribute("data-chunks")) for i in range(2)]
            weights = [page.locator("#conversation li").nth(i).locator(".weights").text_content() for i in range(2)]

            page.select_option("#pick", label="videos/clip1.mp4")  # a video on the server: a new conversation
            expect(page.locator("#video-info")).to_contain_text("clip1.mp4: 64×64, 16 frames")
            expect(page.locator("#conversation li")).to_have_count(0)
            expect(page.locator("#frames img")).to_have_count(4)
        finally:
            browser.close()
    assert all(c > 1 for c in chunks), chunks  # the answers arrived in pieces
    assert "w_g 0." in weights[0] and "w_f 0." in weights[0] and "video encoded" in weights[0]
    assert "video from cache" in weights[1]  # the follow-up did not encode the video again
    # What the page shows is what the API answers to the same conversation (greedy, 8 tokens by default).
    c = client(server)
    url = data_url(videos["clip3"])
    expected = c.chat.completions.create(model=MODEL, messages=[user(url)]).choices[0].message.content
    assert texts[0] == expected
    follow = [user(url), {"role": "assistant", "content": expected}, {"role": "user", "content": "Does the person smile?"}]
    assert texts[1] == c.chat.completions.create(model=MODEL, messages=follow).choices[0].message.content


# ---------------------------------------------------------------------------------------------- no server
def test_serve_refuses_bad_settings_before_loading(checkpoint, tmp_path, capsys):
    from favchat.cli import main

    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not a FaVChat checkpoint" in capsys.readouterr().err
    assert main(["serve", "--model", str(checkpoint), "--api_key_env", "FAVCHAT_UNSET_KEY_VARIABLE"]) == 2
    assert "FAVCHAT_UNSET_KEY_VARIABLE" in capsys.readouterr().err
    assert main(["serve", "--model", str(checkpoint), "--allowed_roots", str(tmp_path / "none")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_feature_cache_drops_the_least_recently_used():
    import torch

    from favchat.model.modeling import VideoFeatures
    from favchat.serve.engine import EncodedVideo, FeatureCache

    def video(n: int) -> EncodedVideo:
        features = VideoFeatures({0: torch.zeros(1, n)}, None)
        return EncodedVideo(features, "full_frame", n * 4)

    cache = FeatureCache(max_bytes=100)
    cache.put("a", video(10))
    cache.put("b", video(10))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", video(10))  # 120 bytes > 100: b goes
    assert "b" not in cache and "a" in cache and "c" in cache and cache.bytes == 80
    cache.put("huge", video(30))  # larger than the whole cache: not kept, nothing evicted for it
    assert "huge" not in cache and len(cache) == 2
    assert (cache.hits, cache.misses, cache.evictions) == (1, 0, 1)
