"""Host memory of ``favchat init`` and of loading its checkpoint, for a paper-shaped model with a smaller LLM.

    python benchmarks/bench_init_memory.py [--workdir DIR]

Writes, in the released layouts and with random weights: a UMT-L-shaped checkpoint (flat ``encoder.*``, fp32, as
``l16_25m.pth``), a Swin-B-shaped FaceXFormer ``model.pt`` (the whole-model dict) and a Qwen2.5-0.5B-shaped LLM
folder (bf16, in 4 safetensors shards as Qwen2.5-7B-Instruct is, with the tiny preset's tokenizer). Then, each in
a fresh process: (1) ``init_checkpoint("paper", ...)`` (build on the meta device, load, write), (2)
``FaVChatForConditionalGeneration.from_pretrained`` of the result (what each training process does). For each it
prints the process's memory after imports, its peak resident memory (VmHWM: includes the file pages it maps
while reading the checkpoints) and its peak anonymous memory (RssAnon sampled every 2 ms: what the process owns),
against the bytes of the model's weights; and the figure this implies for the paper preset (Qwen2.5-7B-Instruct),
whose weights' bytes are counted on the meta device, assuming the memory above the imports grows in proportion
to the weights' bytes. The goal: peak ≤ 1.3 × the weights' bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

GIB = 2**30
# Qwen2.5-0.5B-Instruct's config.json (its vocabulary too: the embedding is a large part of a small LLM)
QWEN25_05B = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
              "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
              "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True, "bos_token_id": 151643, "eos_token_id": 151645, "pad_token_id": 151643}


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class AnonPeak:
    """The peak of RssAnon, sampled every 2 ms in a thread while the block runs."""

    def __enter__(self) -> AnonPeak:
        self.peak, self._stop = _status("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _status("RssAnon"))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))


def write_artefacts(work: Path) -> dict[str, Path]:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from favchat.model.checkpoints import released_key
    from favchat.model.configuration import FaceXFormerConfig, UMTConfig
    from favchat.model.facexformer import SwinBackbone, relative_position_index
    from favchat.model.presets import SWIN_B, UMT_L
    from favchat.model.tokenizer import build_tiny_tokenizer
    from favchat.model.umt import UMTEncoder

    paths = {"umt": work / "l16_25m.pth", "face": work / "model.pt", "llm": work / "qwen2.5-0.5b"}
    g = torch.Generator().manual_seed(0)

    def random_like(shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
        return {k: 0.02 * torch.randn(s, generator=g) for k, s in shapes.items()}

    if not paths["umt"].exists():
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in UMTEncoder(UMTConfig(**UMT_L)).state_dict().items()}
        torch.save({f"encoder.{k}": v for k, v in random_like(shapes).items()}, paths["umt"])
    if not paths["face"].exists():
        config = FaceXFormerConfig(**SWIN_B)
        with torch.device("meta"):
            shapes = {k: v.shape for k, v in SwinBackbone(config).state_dict().items()}
        backbone = {f"backbone.0.{released_key('facexformer', k)}": v for k, v in random_like(shapes).items()}
        index = relative_position_index(config.window_size).flatten()
        backbone |= {k.replace("relative_position_bias_table", "relative_position_index"): index
                     for k in list(backbone) if k.endswith("relative_position_bias_table")}
        decoder = random_like({"face_decoder.transformer.layers.0.mlp.lin1.weight": torch.Size([2048, 256]),
                               "linear_fuse.weight": torch.Size([256, 1024, 1, 1])})
        torch.save({"state_dict_backbone": backbone | decoder}, paths["face"])
    if not (paths["llm"] / "config.json").exists():
        torch.manual_seed(0)
        llm = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN25_05B), dtype=torch.bfloat16)
        llm.save_pretrained(paths["llm"], max_shard_size="300MB")  # 4 shards, as Qwen2.5-7B-Instruct's
        build_tiny_tokenizer().save_pretrained(paths["llm"])
    return paths


def weights_bytes(folder: Path) -> int:
    """The bytes of a checkpoint's tensors (its safetensors headers)."""
    total = 0
    for shard in folder.glob("*.safetensors"):
        with open(shard, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")
    return total


def phase(name: str, work: Path) -> None:
    """Run one phase in this (fresh) process and print its figures as JSON lines."""
    import torch

    from favchat import FaVChatForConditionalGeneration
    from favchat.model.assemble import init_checkpoint

    paths = {"umt": work / "l16_25m.pth", "face": work / "model.pt", "llm": work / "qwen2.5-0.5b"}
    base = _status("VmRSS")

    def report(label: str, anon: AnonPeak, t0: float) -> None:
        print(json.dumps({"phase": label, "base": base, "peak_rss": _status("VmHWM"), "peak_anon": anon.peak,
                          "seconds": time.perf_counter() - t0}))

    t0 = time.perf_counter()
    with AnonPeak() as anon:
        if name == "init":
            init_checkpoint("paper", paths["umt"], paths["face"], paths["llm"], work / "ckpt")
        else:
            model = FaVChatForConditionalGeneration.from_pretrained(work / "ckpt")
            assert model.language_model.dtype == torch.bfloat16
    report(name, anon, t0)
    if name == "load":  # the weights are mapped, not read, until used: read every one
        t0 = time.perf_counter()
        with AnonPeak() as anon, torch.no_grad():
            total = sum(float(p.sum()) for p in model.parameters())
        assert total == total  # not NaN: every weight was read
        report("load + read every weight", anon, t0)


def paper_weights_bytes() -> tuple[int, int]:
    """(all weights, the LLM's) in bytes for the paper preset: Qwen2.5-7B-Instruct in bf16, the rest in fp32."""
    import torch

    from favchat import FaVChatConfig, FaVChatForConditionalGeneration

    with torch.device("meta"):
        model = FaVChatForConditionalGeneration(FaVChatConfig.from_preset("paper"))
    llm = sum(p.numel() * p.element_size() for p in model.language_model.parameters())
    return sum(p.numel() * p.element_size() for p in model.parameters()), llm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="keep the artefacts here (default: a temporary folder)")
    ap.add_argument("--phase", choices=("init", "load"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        return phase(args.phase, Path(args.workdir))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        paths = write_artefacts(work)
        sizes = {k: sum(f.stat().st_size for f in ([p] if p.is_file() else p.glob("*.safetensors")))
                 for k, p in paths.items()}
        print("artefacts: " + ", ".join(f"{p.name} {sizes[k] / GIB:.2f} GiB" for k, p in paths.items()))
        shutil.rmtree(work / "ckpt", ignore_errors=True)
        results = []
        for name in ("init", "load"):
            out = subprocess.run([sys.executable, __file__, "--phase", name, "--workdir", str(work)], check=True,
                                 capture_output=True, text=True).stdout
            results += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        weights = weights_bytes(work / "ckpt")
        paper, paper_llm = paper_weights_bytes()
        print(f"weights: the paper-shaped model with Qwen2.5-0.5B {weights / GIB:.2f} GiB; the paper preset with "
              f"Qwen2.5-7B-Instruct {paper / GIB:.2f} GiB (the LLM {paper_llm / GIB:.2f} GiB in bf16)")
        print(f"{'phase':26s} {'imports':>7s} {'peak RSS':>8s} {'peak anon':>9s} {'time':>6s}   (peak RSS - imports) "
              f"/ weights   implied paper peak RSS")
        for r in results:
            excess = (r["peak_rss"] - r["base"]) / weights
            implied = r["base"] + excess * paper
            print(f"{r['phase']:26s} {r['base'] / GIB:7.2f} {r['peak_rss'] / GIB:8.2f} {r['peak_anon'] / GIB:9.2f} "
                  f"{r['seconds']:5.1f}s   {excess:29.2f}x   {implied / GIB:5.1f} GiB = {implied / paper:.2f}x weights")
        print("(GiB; RSS counts the checkpoint pages a process maps while it reads them, anon what it owns)")


if __name__ == "__main__":
    main()
