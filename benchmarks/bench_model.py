"""Time one question about an 8+8-frame video, then a second question about the same video with the
per-video cache, for the tiny and SmolLM2 presets.

    python benchmarks/bench_model.py [--presets tiny smollm2] [--repeats 3] [--device cpu|cuda] [--threads 1]

Breakdown of the first question: encoders (both towers), prompt-query levels (T, low-level chain,
Q-Formers, adapters, projector), LLM prefill (placeholder scatter + one forward over the prompt), 32
generated tokens. The second question reuses ``encode_video``'s features, so its time before generation
is prompt-query + prefill; the script prints it as a % of the first's (goal: ≤ 40%). Figures are the best
of ``--repeats`` runs after one warm-up run, in CPU time of this process on CPU (on a shared machine wall
time measures the neighbours) and wall time on CUDA. Decoding time = generate() minus its prompt-query and
prefill parts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tqdm import tqdm

from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor

QUESTIONS = ("Describe the facial expression of the person and how it changes.",
             "Does the person wear glasses?")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Best-of-N timings per stage; the stages of one run are measured back to back, run after run, so a
    burst of load on a shared machine hits one sample of every stage rather than all samples of one.

    On CPU the clock is this process's CPU time (what the work costs, whatever the neighbours do); on CUDA
    it is wall time after a synchronize."""

    def __init__(self, device: torch.device):
        self.device, self.best = device, {}
        self.clock = time.perf_counter if device.type == "cuda" else time.process_time

    def __call__(self, name: str, fn):
        _sync(self.device)
        t = self.clock()
        out = fn()
        _sync(self.device)
        self.best[name] = min(self.best.get(name, float("inf")), self.clock() - t)
        return out


def bench(preset: str, repeats: int, device: torch.device, new_tokens: int = 32) -> None:
    t = time.perf_counter()
    cfg = FaVChatConfig.from_preset(preset, num_general_frames=8, num_face_frames=8)
    model = (FaVChatForConditionalGeneration.from_parts(cfg) if cfg.llm_path
             else FaVChatForConditionalGeneration(cfg)).to(device).eval()
    build = time.perf_counter() - t
    proc = FaVChatProcessor.from_config(cfg)
    rng = np.random.default_rng(0)
    video = proc.load_video(rng.integers(0, 256, (48, 96, 96, 3), dtype=np.uint8))
    b1, b2 = (proc([video], [q]).to(device) for q in QUESTIONS)

    def prefill(b, tokens):
        embeds = model.merge_video_tokens(b["input_ids"], tokens)
        return model.language_model(inputs_embeds=embeds, attention_mask=b["attention_mask"])

    def generate(b, feats):
        return model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                              question_ids=b["question_ids"], question_mask=b["question_mask"],
                              video_features=feats, max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    timer = Timer(device)
    with torch.inference_mode():
        for run in tqdm(range(repeats + 1), desc=preset, leave=False):
            if run == 1:
                timer.best = {}  # drop the warm-up run
            feats = timer("enc", lambda: model.encode_video(b1["general_pixel_values"], b1["face_pixel_values"]))
            for i, b in enumerate((b1, b2), start=1):
                tokens, _ = timer(f"pq{i}", lambda b=b, f=feats: model.video_tokens(f, b["question_ids"], b["question_mask"]))
                timer(f"pre{i}", lambda b=b, t=tokens: prefill(b, t))
                ids = timer(f"gen{i}", lambda b=b, f=feats: generate(b, f))
                assert ids.shape[1] == new_tokens
    t = timer.best
    rows = [(t[f"pq{i}"], t[f"pre{i}"], max(0.0, t[f"gen{i}"] - t[f"pq{i}"] - t[f"pre{i}"])) for i in (1, 2)]
    t_enc = t["enc"]
    (pq1, pre1, dec1), (pq2, pre2, dec2) = rows
    first_before = t_enc + pq1 + pre1
    second_before = pq2 + pre2
    ms = 1e3
    clock = "wall time" if device.type == "cuda" else "CPU time"
    print(f"\n== {preset} preset on {device.type} ({torch.get_num_threads()} threads, {clock}), model built in "
          f"{build:.2f} s wall; "
          f"prompt {b1['input_ids'].shape[1]} tokens, N_q={cfg.num_query_tokens}, "
          f"{cfg.num_general_frames}+{cfg.num_face_frames} frames at {cfg.image_size}/{cfg.face_image_size} px")
    print(f"{'':34s}{'question 1':>12s}{'question 2 (cached)':>22s}")
    print(f"{'encoders':34s}{t_enc * ms:10.1f}ms{'(cache) 0.0':>20s}ms")
    print(f"{'prompt-query levels':34s}{pq1 * ms:10.1f}ms{pq2 * ms:20.1f}ms")
    print(f"{'LLM prefill':34s}{pre1 * ms:10.1f}ms{pre2 * ms:20.1f}ms")
    print(f"{'time before generation':34s}{first_before * ms:10.1f}ms{second_before * ms:20.1f}ms")
    print(f"{f'{new_tokens} generated tokens':34s}{dec1 * ms:10.1f}ms{dec2 * ms:20.1f}ms")
    print(f"second question's time before generation = {100 * second_before / first_before:.1f}% of the first's "
          f"(goal <= 40%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "smollm2"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for torch (1: CPU time is not inflated by threads spinning on a busy machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets:
        bench(preset, args.repeats, torch.device(args.device))


if __name__ == "__main__":
    main()
