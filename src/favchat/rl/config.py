"""Configuration of the RL stage (DE-GRPO or vanilla GRPO): one dataclass, one YAML file.

Defaults follow the paper's Table 6 (β = 0.8, τ_low = 0.20, τ_high = 0.80, γ = 0.50, clip ε = 0.20,
β_KL = 0.01). Every field's help is its attribute docstring (``favchat rl --help`` lists them); bad
combinations are rejected in ``__post_init__`` with a message saying how to fix them. ``favchat rl --config
FILE`` reads it (any field can be overridden after it: ``--num_generations 8``)::

    algorithm: de_grpo
    model_path: runs/stage3/final
    train_manifest: data/facesynth/manifest.jsonl
    output_dir: runs/rl
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALGORITHMS = ("de_grpo", "grpo")
REWARDS = ("facial", "format_length")
BACKENDS = ("lexicon", "embedding")
QUESTION_TYPES = ("attribute", "action", "emotion", "description")  # the QA types the facial reward scores


@dataclass
class RLConfig:
    """The RL stage: DE-GRPO or vanilla GRPO from a stage-3 checkpoint (Table 6's values by default)."""

    algorithm: str = "de_grpo"
    """de_grpo: the facial reward, a value head and Eq. 13's advantage, with the recurrent data mechanism
    (recurrent_data); grpo: the same trainer with advantages normalised within each group and no critic,
    every sample every round."""
    recurrent_data: bool = True
    """de_grpo: the recurrent data mechanism (utility h weighting the advantage, removal below tau_low, reward
    decay above tau_high). false: Table 4's 'w.o. RD' (h ≡ 1, every sample every round; reward, critic and Eq.
    13 otherwise unchanged)."""
    reward: str = "facial"
    """facial: the fine-grained facial reward (Eq. 7); format_length: the 'standard' format-and-length reward
    of the paper's 'w. GRPO' ablation."""
    model_path: str | None = None
    """Stage-3 checkpoint folder (FaVChatForConditionalGeneration.from_pretrained)."""
    preset: str = "tiny"
    """Model preset used when model_path is empty (random weights: tests and benchmarks)."""
    train_manifest: str | None = None
    """JSONL manifest of the RL pool (clips with labels and QA pairs)."""
    eval_manifest: str | None = None
    """Held-out manifest for the reward curve (optional)."""
    train_split: str | None = "train"
    """Split of train_manifest to use (None: all lines)."""
    eval_split: str | None = None
    """Split of eval_manifest to use (None: all lines)."""
    pool_fraction: float = 1.0
    """Fraction of the training samples that form the RL pool (the paper: ~10K of 170K)."""
    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    """QA types of the manifest that become RL samples (any of ['attribute', 'action', 'emotion',
    'description']; rl/data.py); eval_manifest's held-out samples too."""
    num_workers: int = 2
    """DataLoader workers that decode the next batches' videos (and find their faces) while the trainer works
    on this one (0: in the training process)."""
    video_cache_size: int = 512
    """Decoded clips kept in memory for later visits, least recently used out first (~3.6 MB a clip at the
    paper preset's frames; 0: none)."""
    output_dir: str = "runs/rl"
    """Where checkpoints, the CSV log and the plots go."""
    seed: int = 0
    """Seed of sampling, shuffling and initialisation."""
    deterministic: bool = False
    """Deterministic kernels only (train/determinism.py): on a GPU, runs with one seed and resumed runs then
    train the same weights; slower."""
    num_generations: int = 4
    """G: responses sampled per sample."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts."""
    top_p: float = 0.9
    """Nucleus sampling of the rollouts."""
    max_new_tokens: int = 320
    """Longest response sampled (and decoded greedily for the held-out reward): the paper's descriptions are
    ~170 words, ~210 tokens."""
    batch_size: int = 8
    """Samples (prompts) per process per optimizer step; each yields G responses. The paper (App. C) uses 8 in
    all: 8 on one process, 1 per process on 8 GPUs."""
    learning_rate: float = 1e-5
    """AdamW learning rate of the policy."""
    value_learning_rate: float = 1e-3
    """AdamW learning rate of the value head and its pooling."""
    weight_decay: float = 0.01
    """AdamW weight decay (App. C: non-zero; its value is not in the paper's text)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""
    num_rounds: int = 3
    """Rounds of the recurrent data mechanism (Fig. 7); 0: only score the starting model on the held-out
    samples (Table 4's 'w.o. RL')."""
    round_passes: int = 5
    """Each round is round_passes·|pool| / (global batch) optimizer steps, drawn as shuffled passes over the
    samples still in the pool: each visit updates a sample's h once, and Table 6's β needs ~5 visits to carry
    h from h0 across a threshold (docs/de_grpo.md)."""
    max_steps: int = 0
    """Stop after this many optimizer steps in total (0: run all rounds)."""
    num_iterations: int = 1
    """μ: policy updates per batch of rollouts (1: old policy = current policy)."""
    clip_eps: float = 0.2
    """ε of the clipped surrogate (Table 6)."""
    beta_kl: float = 0.01
    """β_KL: weight of the k3 KL to the reference policy (Table 6)."""
    adv_eps: float = 1e-4
    """ε added to the group reward std in the advantage (TRL's value)."""
    adv_std_floor: float = 0.1
    """Floor of the group reward std that divides every algorithm's advantage, so that a group with equal
    rewards and an imperfect critic does not get advantages of size 1/ε (DE-GRPO), and GRPO's steps are on the
    same scale (0: Eq. 13 and TRL's GRPO exactly)."""
    trainable: list[str] = field(default_factory=lambda: [
        "general_adapter", "face_adapter", "general_qformer", "face_qformer", "projector", "language_model"])
    """Model components trained by RL (stage 3's set; with LoRA, language_model means its LoRA weights). The
    vision towers stay frozen."""
    kl_is_correction: bool = False
    """Multiply the k3 KL by the importance ratio (TRL's use_bias_correction_kl)."""
    beta: float = 0.8
    """β of the recurrent state h ← βh + (1−β)σ((U−δ)/τ) (Eq. 11)."""
    tau: float = 0.05
    """τ: temperature of the logistic in Eq. 11."""
    tau_low: float = 0.2
    """τ_low: a sample with h < τ_low leaves the pool (Eq. 12)."""
    tau_high: float = 0.8
    """τ_high: a sample with h > τ_high has its rewards decayed (Eq. 12)."""
    gamma: float = 0.5
    """γ: reward decay of samples above τ_high (Eq. 12)."""
    h0: float = 0.5
    """h^(0): initial recurrent state of every sample."""
    pair_margin: float = 0.0
    """ε of the preference pairs: (w, l) with R_w > R_l + ε."""
    probe: list[str] = field(default_factory=lambda: [])
    """Parameter-name prefixes of the probe set θ' for the gradient sensitivity (Eq. 9); empty: the last
    trainable layer."""
    value_coef: float = 0.5
    """Weight of the value-head MSE in the loss (Eq. 16)."""
    reward_backend: str = "lexicon"
    """lexicon (taxonomy synonyms, negation-aware) or embedding (all-MiniLM-L6-v2)."""
    embedding_threshold: float = 0.6
    """Cosine similarity above which the embedding backend matches a label."""
    learnable_weights: bool = True
    """λ = softmax(η) learnable (ascent on within-group reward std); False: fixed."""
    reward_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    """Initial (or fixed) λ over appearance, action, emotion."""
    weights_lr: float = 0.1
    """Step size of the ascent on η."""
    weights_kl: float = 0.1
    """Weight of the KL(λ ‖ uniform) pull."""
    save_every: int = 50
    """Save a checkpoint every this many steps (and at the end of each round)."""
    eval_every: int = 0
    """Held-out reward every this many steps (0: only at the end of each round)."""
    eval_samples: int = 16
    """Held-out samples scored per evaluation (greedy decoding)."""
    log_every: int = 1
    """Console log every this many steps (the CSV gets every step)."""

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"RLConfig: {msg}")

        need(self.algorithm in ALGORITHMS, f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        need(self.reward in REWARDS, f"reward must be one of {REWARDS}, got {self.reward!r}")
        need(self.reward_backend in BACKENDS, f"reward_backend must be one of {BACKENDS}, got {self.reward_backend!r}")
        need(self.num_generations >= 2, "num_generations must be ≥ 2: a group of one response has no pairs and no std")
        need(self.batch_size >= 1, "batch_size must be ≥ 1")
        need(0.0 < self.temperature, "temperature must be > 0 (rollouts are sampled)")
        need(0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]")
        need(self.max_new_tokens >= 1, "max_new_tokens must be ≥ 1")
        need(self.num_workers >= 0 and self.video_cache_size >= 0, "num_workers and video_cache_size must be ≥ 0")
        need(0.0 < self.pool_fraction <= 1.0, "pool_fraction must be in (0, 1]")
        need(0.0 <= self.beta < 1.0, "beta must be in [0, 1): h ← βh + (1−β)σ(·)")
        need(self.tau > 0.0, "tau (the logistic temperature) must be > 0")
        need(0.0 <= self.tau_low < self.tau_high <= 1.0,
             f"need 0 ≤ tau_low < tau_high ≤ 1, got tau_low={self.tau_low}, tau_high={self.tau_high}")
        need(self.tau_low < self.h0 < self.tau_high,
             f"h0={self.h0} must lie between tau_low and tau_high, or samples are removed or decayed before any evidence")
        need(0.0 < self.gamma <= 1.0, "gamma must be in (0, 1]")
        need(0.0 < self.clip_eps < 1.0, "clip_eps must be in (0, 1)")
        need(self.beta_kl >= 0.0, "beta_kl must be ≥ 0")
        need(self.value_coef >= 0.0, "value_coef must be ≥ 0")
        need(self.adv_std_floor >= 0.0, "adv_std_floor must be ≥ 0")
        need(self.num_iterations >= 1, "num_iterations must be ≥ 1")
        need(self.num_rounds >= 0, "num_rounds must be ≥ 0 (0: only score the starting model)")
        need(self.log_every >= 1, "log_every must be ≥ 1")
        need(self.round_passes >= 1, "round_passes must be ≥ 1")
        need(bool(self.question_types) and set(self.question_types) <= set(QUESTION_TYPES),
             f"question_types must be a non-empty subset of {list(QUESTION_TYPES)}, got {self.question_types}")
        need(self.max_steps >= 0, "max_steps must be ≥ 0 (0: no cap)")
        need(len(self.reward_weights) == 3 and all(w > 0 for w in self.reward_weights),
             "reward_weights must be 3 positive numbers (appearance, action, emotion)")
        need(self.pair_margin >= 0.0, "pair_margin must be ≥ 0")
        if self.algorithm == "de_grpo":
            need(self.reward == "facial", "de_grpo needs reward: facial (the utility is built on the fine-grained reward)")
        need(self.model_path is not None or self.preset != "", "give model_path (a stage-3 checkpoint) or a preset")

    @property
    def critic_on(self) -> bool:
        """The value head and Eq. 13's ``R − V`` advantage (DE-GRPO, with or without the recurrent data)."""
        return self.algorithm == "de_grpo"

    @property
    def utility_on(self) -> bool:
        """The recurrent data mechanism: D, G, U, h, removal and decay (Eq. 8–12)."""
        return self.algorithm == "de_grpo" and self.recurrent_data

    def to_dict(self) -> dict[str, Any]:
        from favchat.config import to_dict

        return to_dict(self)

