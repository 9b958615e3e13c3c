"""Load on ``favchat serve`` over loopback: 1, 4 and 16 concurrent clients, each asking about a few videos (a
first question, then a follow-up about the same video), streamed through the official ``openai`` client.

    python benchmarks/bench_serve.py --model runs/demo/stage3/final --videos runs/demo/data/videos

Each concurrency level gets a fresh server (``favchat serve`` in a subprocess on 127.0.0.1, empty cache), and
clients get videos of their own, so every first question finds its video unencoded. Printed per level: requests
per second, p50 / p95 latency to the first token and to the last, the cache's effect (the follow-up's time to
first token against the first question's, same client, same video), the server's peak memory (its /health),
and the requests answered, refused (with the reason) and lost (a connection error, a timeout, or a stream that
ended without its finish). Goals (issue #30): none lost; the follow-up starts its answer in <= 25% of the
first question's time. Traffic goes to 127.0.0.1 only, a bounded number of requests, each with a timeout.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

QUESTIONS = [("What colour is the person's hair?", "What emotion does the person show?"),
             ("What actions does the person perform?", "Does the person wear glasses?"),
             ("Describe the person's face in the video.", "Is the person smiling or frowning?")]


@dataclass
class Result:
    client: int
    video: int
    turn: int  # 0: the first question about the video, 1: the follow-up
    outcome: str  # "answered" | "refused: <status> <code>" | "lost: <why>"
    first_s: float | None = None  # to the first token (or to the finish, for an empty answer)
    last_s: float | None = None
    cached: bool | None = None  # as the server reported it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "favchat", "serve", "--model", args.model, "--port", str(port), *args.server_args]
    if args.device:
        cmd += ["--device", args.device]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"favchat serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            get_json(base + "/health")
            return proc, base
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("favchat serve did not answer /health within 600 s")


def run_client(i: int, base: str, model: str, videos: list[str], args: argparse.Namespace) -> list[Result]:
    from openai import APIConnectionError, APIError, APIStatusError, APITimeoutError, OpenAI

    client = OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=args.timeout)
    results = []
    for k, url in enumerate(videos):
        questions = QUESTIONS[k % len(QUESTIONS)]
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                 {"type": "text", "text": questions[0]}]}]
        answer = ""
        for turn, question in enumerate(questions):
            if turn:
                messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": question}]
            result, answer = Result(i, k, turn, "lost: no finish"), ""
            start = time.perf_counter()
            try:
                stream = client.chat.completions.create(model=model, messages=messages, max_tokens=args.max_tokens,
                                                        stream=True)
                for chunk in stream:
                    extra = chunk.model_extra or {}
                    if "favchat" in extra:
                        result.cached = extra["favchat"]["video"]["cached"]
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0]
                    if (choice.delta.content or choice.finish_reason) and result.first_s is None:
                        result.first_s = time.perf_counter() - start
                    answer += choice.delta.content or ""
                    if choice.finish_reason:
                        result.last_s = time.perf_counter() - start
                        result.outcome = "answered"
            except APIStatusError as e:
                body = e.body if isinstance(e.body, dict) else {}
                result.outcome = f"refused: {e.status_code} {body.get('code') or body.get('error', {}).get('code')}"
            except (APIConnectionError, APITimeoutError) as e:
                result.outcome = f"lost: {type(e).__name__}"
            except APIError as e:  # an error event in the stream: the server failed mid-answer
                result.outcome = f"lost: {e.message}"
            results.append(result)
            if not result.outcome == "answered":
                break  # no follow-up without its first answer
    return results


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def level(n: int, args: argparse.Namespace, clips: list[Path], model: str, logs: Path) -> dict:
    proc, base = start_server(args, logs / f"server-{n}.log")
    try:
        urls = ["data:video/mp4;base64," + base64.b64encode(p.read_bytes()).decode() for p in clips]
        per = args.videos_per_client
        assigned = [[urls[(c * per + k) % len(urls)] for k in range(per)] for c in range(n)]
        start = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            results = [r for rs in pool.map(lambda c: run_client(c, base, model, assigned[c], args), range(n))
                       for r in rs]
        wall = time.perf_counter() - start
        health = get_json(base + "/health")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    done = [r for r in results if r.outcome == "answered"]
    firsts = {(r.client, r.video): r for r in done if r.turn == 0}
    pairs = [(firsts[(r.client, r.video)].first_s, r.first_s) for r in done
             if r.turn == 1 and (r.client, r.video) in firsts]
    return {"clients": n, "requests": len(results), "answered": len(done),
            "refused": Counter(r.outcome[9:] for r in results if r.outcome.startswith("refused")),
            "lost": Counter(r.outcome[6:] for r in results if r.outcome.startswith("lost")),
            "rps": len(done) / wall, "wall": wall,
            "first": [r.first_s for r in done], "last": [r.last_s for r in done],
            "first_q": [a for a, _ in pairs], "second_q": [b for _, b in pairs],
            "misses_first": sum(1 for r in done if r.turn == 0 and r.cached is False),
            "hits_second": sum(1 for r in done if r.turn == 1 and r.cached is True),
            "memory": health["memory"], "cache": health["cache"], "device": health["device"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--videos", required=True, type=Path, help="folder of clips (the first ones, sorted, are used)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels")
    p.add_argument("--videos-per-client", type=int, default=3, help="videos each client asks about (2 questions each)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per answer at most")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a client waits for one request")
    p.add_argument("--device", help="the server's torch device (default: its own choice)")
    p.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                   help="more favchat serve options (last on the line), e.g. --server-args --max_pending 8")
    args = p.parse_args()
    clips = sorted(args.videos.glob("*.mp4"))[: max(args.clients) * args.videos_per_client]
    if not clips:
        sys.exit(f"{args.videos}: no .mp4 clips")
    model = Path(args.model).resolve()
    model = model.parent.name if model.name == "final" else model.name
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as logs:
        for n in args.clients:
            print(f"{n} client(s)...", file=sys.stderr, flush=True)
            rows.append(level(n, args, clips, model, Path(logs)))

    print(f"\nfavchat serve, {args.model} on {rows[0]['device']}; {len(clips)} clips from {args.videos}; "
          f"{args.videos_per_client} videos x 2 questions per client, max_tokens {args.max_tokens}, streamed; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| clients | requests | answered | refused | lost | req/s | first token p50 / p95 (s) | last token "
          "p50 / p95 (s) | 1st question first token p50 (s) | follow-up first token p50 (s) | follow-up / 1st "
          "| peak RSS (MiB) |")
    print("|" + "---|" * 12)
    for r in rows:
        ratio = statistics.median(r["second_q"]) / statistics.median(r["first_q"]) if r["first_q"] else float("nan")
        refused = ", ".join(f"{k}: {v}" for k, v in r["refused"].items()) or "0"
        lost = ", ".join(f"{k}: {v}" for k, v in r["lost"].items()) or "0"
        memory = r["memory"]["peak_rss_mib"]
        if "peak_cuda_mib" in r["memory"]:
            memory = f"{memory} (CUDA {r['memory']['peak_cuda_mib']})"
        print(f"| {r['clients']} | {r['requests']} | {r['answered']} | {refused} | {lost} | {r['rps']:.2f} | "
              f"{percentile(r['first'], 50):.3f} / {percentile(r['first'], 95):.3f} | "
              f"{percentile(r['last'], 50):.3f} / {percentile(r['last'], 95):.3f} | "
              f"{statistics.median(r['first_q']):.3f} | {statistics.median(r['second_q']):.3f} | {ratio:.0%} | "
              f"{memory} |")
    print()
    for r in rows:
        print(f"{r['clients']} client(s): first questions whose video the towers encoded {r['misses_first']}, "
              f"follow-ups served from the cache {r['hits_second']}; cache at the end {r['cache']}")
    lost = sum(sum(r["lost"].values()) for r in rows)
    worst = max((statistics.median(r["second_q"]) / statistics.median(r["first_q"]) for r in rows if r["first_q"]),
                default=float("nan"))
    print(f"\ngoals: none lost: {'yes' if lost == 0 else f'NO ({lost} lost)'}; follow-up first token <= 25% of the "
          f"first question's: {'yes' if worst <= 0.25 else 'NO'} (worst level {worst:.0%})")


if __name__ == "__main__":
    main()
