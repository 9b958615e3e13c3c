"""Deterministic kernels for one run (``deterministic: true`` in a stage or RL config).

On a GPU several kernels (cuDNN's convolution backward, the embedding backward, cuBLAS with its default
workspace split) add in an order that changes from run to run, so two runs with the same seed, or a run and
its resumption, end slightly apart (on an H100, beyond 1e-6 after four steps of the tiny preset). With
``deterministic`` every kernel is a deterministic one (an op that has none stops with torch's error naming
it) and the runs train the same weights, at some cost in speed. On a CPU the kernels used here are
deterministic already.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

_CUBLAS = "CUBLAS_WORKSPACE_CONFIG"


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """Within the block: deterministic algorithms only, cuDNN without autotuning, cuBLAS with a fixed
    workspace. The previous settings come back after it. ``enabled=False`` changes nothing."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark, os.environ.get(_CUBLAS))
    os.environ.setdefault(_CUBLAS, ":4096:8")
    torch.use_deterministic_algorithms(True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        enabled_before, warn_only, cudnn.deterministic, cudnn.benchmark, cublas = before
        torch.use_deterministic_algorithms(enabled_before, warn_only=warn_only)
        if cublas is None:
            os.environ.pop(_CUBLAS, None)
