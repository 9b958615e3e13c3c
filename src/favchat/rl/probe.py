"""Per-response gradients on the probe parameter set θ' (DE-GRPO's gradient sensitivity, Eq. 9).

``g(o) = ∇_θ' (1/|o|) Σ_t log π(o_t | x, o_<t)`` for every response that appears in a preference pair.

The fast path (:class:`ProbeCapture`) uses that the rows of a batch never interact in a causal LM: one
backward of ``Σ_n seq_logp[n]`` to the probe modules' *outputs* gives each row's output gradient δ_n,
and each row's parameter gradient is then the vector-Jacobian product of the probe module alone at that
row's input (``torch.func.vmap`` over rows). Its cost is one short backward plus M tiny module
backwards, instead of M backwards through the log-softmax and LM head of the whole batch
(:func:`per_response_grads`, the reference it is tested against and the fallback).
"""

from __future__ import annotations

import torch
from torch.func import functional_call, vjp, vmap


def probe_parameters(model: torch.nn.Module, prefixes: list[str]) -> list[tuple[str, torch.nn.Parameter]]:
    """θ' of Eq. 9: trainable parameters under ``prefixes``, or those of the last trainable layer.

    "Last" is in forward order: the LLM runs last, so when it has trainable parameters the probe is its
    last trainable module (a LoRA B matrix, or the final norm / head), which keeps each per-response
    backward short; otherwise the last trainable module of the model.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters: nothing for RL to train")
    if prefixes:
        sel = [(n, p) for n, p in named if n.startswith(tuple(prefixes))]
        if not sel:
            raise ValueError(f"no trainable parameter starts with any of probe={prefixes}")
        return sel
    in_llm = [(n, p) for n, p in named if n.startswith("language_model.")]
    last = (in_llm or named)[-1][0].rsplit(".", 1)[0]
    return [(n, p) for n, p in named if n.rsplit(".", 1)[0] == last]


def per_response_grads(seq_logp: torch.Tensor, probe: list[torch.nn.Parameter], rows: list[int]) -> torch.Tensor:
    """∇_θ' seq_logp[r] for each r in ``rows`` by batched backward: (len(rows), P') float32 on CPU.

    Exact for any model; each row costs a backward through the whole batch's head. The graph is kept.
    """
    onehot = torch.zeros(len(rows), seq_logp.shape[0], device=seq_logp.device, dtype=seq_logp.dtype)
    onehot[torch.arange(len(rows)), torch.tensor(rows)] = 1.0  # (M, N)
    try:
        parts = torch.autograd.grad(seq_logp, probe, grad_outputs=onehot, is_grads_batched=True,
                                    retain_graph=True, allow_unused=True)
    except (RuntimeError, NotImplementedError):  # an op without a batching rule: one backward per response
        per = [torch.autograd.grad(seq_logp[r], probe, retain_graph=True, allow_unused=True) for r in rows]
        parts = tuple(torch.stack([torch.zeros_like(p) if q[k] is None else q[k] for q in per])
                      for k, p in enumerate(probe))
    return torch.cat([(torch.zeros(len(rows), *p.shape, device=p.device) if gr is None else gr)
                      .flatten(1).float().cpu() for gr, p in zip(parts, probe, strict=True)], 1)


class ProbeCapture:
    """Forward hooks on the modules that own the probe parameters; see the module docstring.

    Use ``with capture.recording(): out = model(...)``, then ``capture.grads(seq_logp, rows)``.
    Parameters are ordered as ``names``; a probe module called other than once per forward (or a
    module whose input is not its first positional tensor) makes ``grads`` fall back to
    :func:`per_response_grads`.
    """

    def __init__(self, model: torch.nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        self.names = list(names)
        self.owners: dict[str, list[str]] = {}
        for n in self.names:
            mod, pname = n.rsplit(".", 1)
            self.owners.setdefault(mod, []).append(pname)
        self.modules = {m: modules[m] for m in self.owners}
        self.params = [dict(model.named_parameters())[n] for n in self.names]
        self._records: dict[str, list[tuple[tuple, torch.Tensor]]] = {}
        self._on = False
        self._handles = [mod.register_forward_hook(self._hook(name)) for name, mod in self.modules.items()]

    def _hook(self, name: str):
        def hook(module, args, output):
            if self._on:
                self._records.setdefault(name, []).append((args, output))
        return hook

    def recording(self):
        capture = self

        class _Ctx:
            def __enter__(self):
                capture._records, capture._on = {}, True

            def __exit__(self, *exc):
                capture._on = False

        return _Ctx()

    def _fast_ok(self) -> bool:
        return all(len(self._records.get(m, ())) == 1 and self._records[m][0][0]
                   and isinstance(self._records[m][0][0][0], torch.Tensor)
                   and isinstance(self._records[m][0][1], torch.Tensor) for m in self.owners)

    def grads(self, seq_logp: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """(len(rows), P') float32 on CPU, in the order of ``names``; keeps the graph."""
        if not self._fast_ok():
            return per_response_grads(seq_logp, self.params, rows)
        mods = list(self.owners)
        outs = [self._records[m][0][1] for m in mods]
        deltas = torch.autograd.grad(seq_logp.sum(), outs, retain_graph=True, allow_unused=True)
        idx = torch.tensor(rows, device=seq_logp.device)
        per_name: dict[str, torch.Tensor] = {}
        for m, delta in zip(mods, deltas, strict=True):
            module, pnames = self.modules[m], self.owners[m]
            if delta is None:  # the output does not reach the log-probs
                for p in pnames:
                    per_name[f"{m}.{p}"] = torch.zeros(len(rows), getattr(module, p).numel())
                continue
            x = self._records[m][0][0][0].detach()[idx]  # (M, ...) this module's input rows
            d = delta.detach()[idx]  # (M, ...) its output gradient rows
            params = {p: getattr(module, p).detach() for p in pnames}

            def row_grad(xi, di, module=module, params=params):
                _, pull = vjp(lambda ps: functional_call(module, ps, (xi.unsqueeze(0),)), params)
                return pull(di.unsqueeze(0))[0]

            g = vmap(row_grad)(x, d)
            for p in pnames:
                per_name[f"{m}.{p}"] = g[p].flatten(1).float().cpu()
        return torch.cat([per_name[n] for n in self.names], 1)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
