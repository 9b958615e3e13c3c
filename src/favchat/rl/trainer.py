"""The RL trainer: DE-GRPO (paper §2.2, App. D; docs/design.md §3) and vanilla GRPO in one loop.

Run it with ``favchat rl --config FILE`` (or ``accelerate launch -m favchat.cli rl --config FILE``).

One optimizer step, for a batch of B samples per process (shapes: N = B·G responses, L prompt tokens,
T completion tokens)::

    encode videos once (towers frozen)          VideoFeatures (B) → repeated G times (N)
    sample G responses (temperature, top-p)     (N, T) ids + mask (up to and including EOS)
    rewards                                     R (B, G); per-group soft F1 (N, 3); λ
    policy forward (grad)                       log π (N, T); prompt hidden states → V_φ (B,)
    reference forward (no grad)                 log π_ref (N, T)
    DE-GRPO with the recurrent data mechanism:
      pairs, D (Eq. 8), probe gradients → G (Eq. 9)   per sample
      gather (idx, D, G) over processes → U (Eq. 10), h (Eq. 11), remove/decay (Eq. 12), same on every rank
    DE-GRPO: A = h·γ_i·(R − V)/(max(std R, floor) + ε) (Eq. 13; h ≡ 1, γ_i ≡ 1 without the mechanism);
      loss = clipped surrogate + β_KL·k3 + c_v·MSE(V, mean R)
    GRPO: A = (R − mean R)/(max(std R, floor) + ε); loss = clipped surrogate + β_KL·k3
    backward, clip, step; λ ascent on the gathered group scores

Rounds: every round takes the same number of steps, ``round_passes`` passes' worth of the whole pool, drawn
as shuffled passes over the samples still in it (with the recurrent data mechanism a sample whose h fell
below τ_low leaves from the next pass on, so the survivors are visited more often; otherwise every sample
stays). The held-out reward is scored before the first step and after every round. Checkpoints
(``accelerator.save_state`` + ``rl_state.pt``) hold the model, value head, optimizer, RNG states of every
process, the per-sample state, λ, and the position inside the round, so ``resume`` continues bit-exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from favchat.data.taxonomy import GROUPS
from favchat.rl import de_grpo, rewards
from favchat.rl.config import RLConfig
from favchat.rl.data import PoolVideos, RLSample, VideoLRU, load_pool, subset
from favchat.rl.probe import ProbeCapture, probe_parameters
from favchat.rl.reference import ReferencePolicy
from favchat.rl.state import SampleState
from favchat.rl.value_head import ValueHead
from favchat.train import toolkit
from favchat.train.config import OptimSection
from favchat.train.determinism import deterministic_kernels

log = logging.getLogger("favchat.rl")

RL_STATE_FILE = "rl_state.pt"
H_BINS = 10


def completion_mask(ids: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """1 on every token up to and including the first EOS, 0 after it. ids: (N, T) -> (N, T) long."""
    if eos_id is None:
        return torch.ones_like(ids)
    is_eos = (ids == eos_id).long()  # (N, T)
    after = is_eos.cumsum(1) - is_eos  # EOS tokens strictly before each position
    return (after == 0).long()


def token_logps(logits: torch.Tensor, ids: torch.Tensor, prompt_len: int, temperature: float,
                suppressed: list[int] = ()) -> torch.Tensor:
    """log π(o_t | x, o_<t) of the completion tokens. logits: (N, L+T, V); ids: (N, T) -> (N, T) float32.

    Logits are divided by the sampling temperature and the ``suppressed`` token ids (never sampled, see
    ``RLTrainer._rollouts``) are removed, so the log-probs are those of the distribution sampled from.
    """
    t = ids.shape[1]
    lg = logits[:, prompt_len - 1: prompt_len - 1 + t].float() / temperature  # (N, T, V)
    if suppressed:
        lg = lg.index_fill(-1, torch.tensor(list(suppressed), device=lg.device), float("-inf"))
    return lg.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, -1)  # (N, T)


class RLTrainer:
    """DE-GRPO / GRPO over an RL pool. Give a config; optionally a ready model, processor and samples
    (tests and the benchmark do), else they load from ``config.model_path`` / ``config.train_manifest``.

    Resuming needs the same starting model (the same ``model_path``, or an equal injected model): the
    reference policy is the starting model, not the checkpoint (``favchat.rl.reference``).
    """

    def __init__(self, config: RLConfig, model=None, processor=None, train_samples: list[RLSample] | None = None,
                 eval_samples: list[RLSample] | None = None, load_video=None, progress: bool = True):
        from accelerate.utils import set_seed

        self.cfg = cfg = config
        self.progress = progress  # progress bars (on the main process)
        self.acc = toolkit.make_accelerator(cfg.output_dir, find_unused_parameters=True)
        self.out = Path(cfg.output_dir)
        # The seed governs the rollouts' sampling and the value head's initialisation, not only the data order.
        set_seed(cfg.seed)
        # Data first: a bad manifest fails before any model is built.
        self.pool = subset(train_samples, cfg.pool_fraction, cfg.seed) if train_samples is not None else load_pool(
            self._need(cfg.train_manifest, "train_manifest"), cfg.train_split, cfg.pool_fraction, cfg.seed,
            cfg.question_types)
        if eval_samples is None and cfg.eval_manifest:
            eval_samples = load_pool(cfg.eval_manifest, cfg.eval_split, types=cfg.question_types)
        self.eval_pool = (eval_samples or [])[: cfg.eval_samples]
        if model is None:
            model, processor = self._load_model()
        elif processor is None:
            raise ValueError("an injected model needs its processor")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.eos_id = self.tokenizer.eos_token_id
        self.suppressed = [processor.video_token_id]
        model.set_trainable(cfg.trainable)
        frozen_towers = [c for c in ("general_encoder", "face_encoder") if c in cfg.trainable]
        if frozen_towers:
            raise ValueError(f"RL keeps the vision towers frozen (stage-3 schedule); remove {frozen_towers} from "
                             "trainable")
        # before anything wraps the model: it may fold the LLM's adapters (the same function) into its base
        self.reference = ReferencePolicy(model) if cfg.beta_kl != 0.0 else None
        self.probe_names = [n for n, _ in probe_parameters(model, cfg.probe)] if cfg.utility_on else []


        self.state = SampleState.create(len(self.pool), cfg.h0)
        self.weights = rewards.RewardWeights(learnable=cfg.learnable_weights, lr=cfg.weights_lr,
                                        kl_coef=cfg.weights_kl, init=cfg.reward_weights)
        params = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.learning_rate}]
        self.value_head = None
        if cfg.critic_on:
            self.value_head = ValueHead(model.config.text_config.hidden_size).to(model.device)
            params.append({"params": list(self.value_head.parameters()), "lr": cfg.value_learning_rate})
        optimizer = toolkit.make_optimizer(params, OptimSection(lr=cfg.learning_rate, weight_decay=cfg.weight_decay))
        if self.value_head is not None:
            self.model, self.value_head, self.optimizer = self.acc.prepare(model, self.value_head, optimizer)
        else:
            self.model, self.optimizer = self.acc.prepare(model, optimizer)
        if self.reference is not None:
            self.reference.copies = {n: t.to(self.acc.device) for n, t in self.reference.copies.items()}
        self.capture = ProbeCapture(self._policy(), self.probe_names) if cfg.utility_on else None
        # position: round, steps taken in it, passes started in it, the current pass's order and place in it
        self.step, self.round, self.round_step, self.passes, self.order, self.pos = 0, 0, 0, 0, None, 0
        # decoded clips kept for later visits (load_video: a caller's decoder, e.g. one shared with its other runs)
        self.videos = VideoLRU(load_video or self.processor.load_video, cfg.video_cache_size)
        self.history: list[dict[str, float]] = []  # every logged row (also in metrics.csv)

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _need(value: str | None, name: str) -> str:
        if not value:
            raise ValueError(f"RLConfig.{name} is required when no samples are passed in")
        return value

    def _load_model(self):
        from favchat.model.configuration import FaVChatConfig
        from favchat.model.modeling import FaVChatForConditionalGeneration
        from favchat.model.processing import FaVChatProcessor

        cfg = self.cfg
        if cfg.model_path:
            path = Path(cfg.model_path)
            if not path.is_dir():
                raise FileNotFoundError(f"model_path {path} is not a folder (a stage-3 checkpoint is expected)")
            model = FaVChatForConditionalGeneration.from_pretrained(path)
            return model, FaVChatProcessor.from_pretrained(path)
        torch.manual_seed(cfg.seed)
        config = FaVChatConfig.from_preset(cfg.preset)
        processor = FaVChatProcessor.from_config(config)
        return FaVChatForConditionalGeneration(config), processor

    # ------------------------------------------------------------------ batches
    def preload_videos(self) -> None:
        """Decode every pool and held-out video now, as far as the cache holds them (timings then measure
        training, not decoding)."""
        for s in tqdm(self.pool + self.eval_pool, desc="decode videos",
                      disable=not (self.progress and self.acc.is_main_process)):
            self.videos(s)

    def _prompt_batch(self, samples: list[RLSample], videos: list | None = None) -> dict[str, torch.Tensor]:
        videos = videos if videos is not None else [self.videos(s) for s in samples]
        batch = self.processor(videos, [s.question for s in samples])
        return {k: v.to(self.acc.device) for k, v in batch.items()}

    def _pass_batches(self) -> Iterator[tuple[list[int], list]]:
        """This process's batches of the current pass from ``pos`` on: (pool indices, decoded videos), the
        videos decoded ahead in ``num_workers`` DataLoader workers; what they decode joins the cache."""
        gbs, b, rank = self.cfg.batch_size * self.acc.num_processes, self.cfg.batch_size, self.acc.process_index
        order, local = self.order, []
        for pos in range(self.pos, len(order), gbs):
            take = order[pos: pos + gbs]
            if len(take) < gbs:  # fill the pass's last batch from its start so every rank has B samples
                take = torch.cat([take, order.repeat(math.ceil(gbs / len(order)))[: gbs - len(take)]])
            local += take[rank * b: (rank + 1) * b].tolist()
        # a generator of its own: a DataLoader draws its workers' seed from the global RNG otherwise, and a run
        # resumed mid-pass (its loader started at the resume point) would then sample other rollouts
        loader = torch.utils.data.DataLoader(PoolVideos(self.pool, self.videos), batch_size=b, sampler=local,
                                             num_workers=self.cfg.num_workers, collate_fn=list,
                                             generator=torch.Generator())
        for items in loader:
            for i, video in items:
                self.videos.put(self.pool[i], video)
            yield [i for i, _ in items], [v for _, v in items]

    def _policy(self):
        return self.acc.unwrap_model(self.model)

    @torch.no_grad()
    def _rollouts(self, batch: dict[str, torch.Tensor], g: int, greedy: bool = False):
        """→ (video features repeated (N), prompt tensors repeated (N, L), completion ids (N, T), mask)."""
        policy = self._policy()
        feats = policy.encode_video(batch["general_pixel_values"], batch["face_pixel_values"]).detach()
        feats = feats.repeat_interleave(g)
        prompt = {k: batch[k].repeat_interleave(g, 0) for k in ("input_ids", "attention_mask", "question_ids",
                                                               "question_mask")}
        was_training = policy.training
        policy.eval()
        # The video placeholder must never be sampled: the model places exactly N_q of them per sequence.
        ids = policy.generate(**prompt, video_features=feats, max_new_tokens=self.cfg.max_new_tokens,
                              do_sample=not greedy, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                              suppress_tokens=self.suppressed)
        policy.train(was_training)
        if ids.shape[1] == 0:  # generation stopped at once: keep one (masked) column so shapes stay valid
            ids = ids.new_full((ids.shape[0], 1), self.tokenizer.pad_token_id)
            return feats, prompt, ids, torch.zeros_like(ids)
        return feats, prompt, ids, completion_mask(ids, self.eos_id)

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)
                for row, m in zip(ids.cpu(), mask.cpu(), strict=True)]

    def _rewards(self, samples: list[RLSample], texts: list[str], g: int) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (training reward R (N,) float64, facial group scores (N, 3) with NaN where no labels)."""
        labels = [s.labels for s in samples for _ in range(g)]
        scores = rewards.group_scores(texts, labels, self.cfg.reward_backend, self.cfg.embedding_threshold)
        if self.cfg.reward == "facial":
            reward = rewards.weighted_total(scores, self.weights.weights)
        else:
            prompts = [s.question for s in samples for _ in range(g)]
            reward = rewards.combine_rewards({"format_length_reward": rewards.format_length_reward(prompts, texts)}, len(texts))
        return torch.nan_to_num(reward, nan=0.0), scores

    def _forward_logps(self, model, feats, prompt, ids, mask, hidden: bool):
        """``model``: the policy, or the reference's forward function."""
        input_ids = torch.cat([prompt["input_ids"], ids], 1)  # (N, L+T)
        attn = torch.cat([prompt["attention_mask"], mask], 1)  # (N, L+T)
        out = model(input_ids=input_ids, attention_mask=attn, question_ids=prompt["question_ids"],
                    question_mask=prompt["question_mask"], video_features=feats, output_hidden_states=hidden)
        return token_logps(out.logits, ids, prompt["input_ids"].shape[1], self.cfg.temperature,
                           self.suppressed), out

    @torch.no_grad()
    def _ref_logps(self, feats, prompt, ids, mask) -> torch.Tensor | None:
        if self.reference is None:
            return None
        with self.reference.forward_fn(self._policy()) as reference:
            return self._forward_logps(reference, feats, prompt, ids, mask, False)[0]

    # ------------------------------------------------------------------ DE-GRPO utility
    def _sensitivity(self, seq_logp: torch.Tensor, group_rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample D (Eq. 8) and G (Eq. 9). seq_logp: (N,) with graph; group_rewards: (B, G) -> (B,), (B,)."""
        b, g = group_rewards.shape
        pairs = [de_grpo.preference_pairs(group_rewards[i], self.cfg.pair_margin) for i in range(b)]
        d_out = torch.stack([de_grpo.separability(group_rewards[i], pairs[i]) for i in range(b)]).float()
        g_out = torch.zeros(b)
        rows = sorted({i * g + j for i in range(b) for j in pairs[i].flatten().tolist()})
        if not rows:
            return d_out, g_out
        grads = torch.zeros(b * g, sum(p.numel() for p in self.capture.params))  # (N, P'); 0 outside pairs
        grads[rows] = self.capture.grads(seq_logp, rows)
        for i in range(b):
            g_out[i] = de_grpo.gradient_sensitivity(grads[i * g:(i + 1) * g], pairs[i])
        return d_out, g_out

    def _update_state(self, idx: list[int], d: torch.Tensor, gs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather the batch of every process, run Eq. 10–12 on it identically everywhere, return this
        process's (h, decay) rows."""
        dev = self.acc.device
        all_idx = self.acc.gather(torch.tensor(idx, device=dev)).cpu()
        all_d = self.acc.gather(d.to(dev, torch.float64)).cpu()
        all_g = self.acc.gather(gs.to(dev, torch.float64)).cpu()
        u = de_grpo.utility(all_d, all_g)
        h = de_grpo.recurrent_state(self.state.h[all_idx], u, self.cfg.beta, self.cfg.tau)
        remove, decay = de_grpo.filter_decay(h, self.cfg.tau_low, self.cfg.tau_high)
        self.state.update(all_idx, h, remove, decay, self.round)
        b = len(idx)
        rows = slice(self.acc.process_index * b, (self.acc.process_index + 1) * b)
        return h[rows], decay[rows]

    # ------------------------------------------------------------------ one step
    def train_step(self, idx: list[int], videos: list | None = None) -> dict[str, float]:
        """One optimizer step on pool samples ``idx`` (this process's share), their decoded ``videos`` if given."""
        cfg, g = self.cfg, self.cfg.num_generations
        t0 = time.perf_counter()
        samples = [self.pool[i] for i in idx]
        b = len(samples)
        batch = self._prompt_batch(samples, videos)
        feats, prompt, ids, mask = self._rollouts(batch, g)
        texts = self._decode(ids, mask)
        reward, scores = self._rewards(samples, texts, g)  # (N,), (N, 3)
        r_bg = reward.view(b, g).to(self.acc.device, torch.float32)  # (B, G)
        ref = self._ref_logps(feats, prompt, ids, mask)
        t_gen = time.perf_counter() - t0

        self.model.train()
        metrics: dict[str, float] = {}
        adv = h = values = None
        probe_time = 0.0
        for it in range(cfg.num_iterations):
            with self.capture.recording() if (cfg.utility_on and it == 0) else contextlib.nullcontext():
                logps, out = self._forward_logps(self.model, feats, prompt, ids, mask, hidden=cfg.critic_on)
            if it == 0:
                old = logps.detach()
                if cfg.utility_on:
                    tp = time.perf_counter()
                    m = mask.to(logps.dtype)
                    seq_logp = (logps * m).sum(-1) / m.sum(-1).clamp(min=1.0)  # (N,)
                    d, gs = self._sensitivity(seq_logp, r_bg.detach().cpu())
                    h, decay = self._update_state(idx, d, gs)
                    probe_time = time.perf_counter() - tp
                    h, decay = h.to(self.acc.device, torch.float32), decay.to(self.acc.device)
            if cfg.critic_on:
                hid = out.hidden_states[-1][::g, : prompt["input_ids"].shape[1]]  # (B, L, D)
                values = self.value_head(hid, prompt["attention_mask"][::g]).float()  # (B,)
                if it == 0:
                    if not cfg.utility_on:  # w.o. RD: Eq. 13 with h ≡ 1 and no decay
                        h = torch.ones(b, device=self.acc.device)
                        decay = torch.zeros(b, dtype=torch.bool, device=self.acc.device)
                    adv = de_grpo.advantages(r_bg, h, values.detach(), decay, cfg.gamma, cfg.adv_eps,
                                       cfg.adv_std_floor).reshape(-1)  # (N,)
                v_loss = de_grpo.value_loss(values, r_bg)
            else:
                if it == 0:
                    adv = de_grpo.group_advantages(r_bg, cfg.adv_eps, cfg.adv_std_floor).reshape(-1)  # (N,)
                v_loss = torch.zeros((), device=self.acc.device)
            p_loss, pm = de_grpo.policy_loss(logps, old, ref, adv, mask, cfg.clip_eps, cfg.beta_kl,
                                       kl_is_correction=cfg.kl_is_correction)
            loss = p_loss + cfg.value_coef * v_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite RL loss at step {self.step} (policy {p_loss.item()}, "
                                         f"value {v_loss.item()}); rewards were {reward.tolist()}")
            self.acc.backward(loss)
            if cfg.max_grad_norm > 0:
                self.acc.clip_grad_norm_([p for grp in self.optimizer.param_groups for p in grp["params"]],
                                         cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        all_scores = self.acc.gather(scores.to(self.acc.device)).cpu()  # (N·P, 3)
        if cfg.reward == "facial":
            self.weights.update(all_scores, g)

        all_r = self.acc.gather(reward.to(self.acc.device)).cpu()
        metrics["reward"] = float(all_r.mean())
        metrics["reward_std_in_group"] = float(all_r.view(-1, g).std(1).mean())
        for k, grp in enumerate(GROUPS):
            col = all_scores[:, k]
            metrics[f"{grp}_reward"] = float(col[~col.isnan()].mean()) if (~col.isnan()).any() else 0.0
        metrics["facial_reward"] = float(rewards.weighted_total(all_scores, torch.full((3,), 1 / 3, dtype=torch.float64)).mean())
        for k, grp in enumerate(GROUPS):
            metrics[f"lambda_{grp}"] = float(self.weights.weights[k])
        metrics["kl"] = float(self.acc.reduce(pm["kl"], "mean"))
        metrics["clip_fraction"] = float(self.acc.reduce(pm["clip_fraction"], "mean"))
        metrics["policy_loss"] = float(self.acc.reduce(p_loss.detach(), "mean"))
        metrics["value_loss"] = float(self.acc.reduce(v_loss.detach(), "mean"))
        metrics["completion_len"] = float(mask.sum(1).float().mean())
        if self.eos_id is not None:  # responses cut by max_new_tokens: no EOS sampled
            metrics["truncated"] = float((ids != self.eos_id).all(1).float().mean())
        # the advantage's common part (a critic's error shows here) and its spread; the critic's mean estimate
        all_adv = self.acc.gather(adv.detach()).cpu()  # (N·P,)
        metrics["adv_mean"], metrics["adv_std"] = float(all_adv.mean()), float(all_adv.std())
        if values is not None:
            metrics["value_mean"] = float(self.acc.reduce(values.detach().mean(), "mean"))
        metrics["pool_size"] = float(len(self.state.active()))
        metrics["removed"] = float((self.state.removed_round >= 0).sum())
        metrics["decayed"] = float(self.state.decayed.sum())
        metrics["decay_events"] = float(self.state.times_decayed.sum())
        for k, c in enumerate(self.state.histogram(H_BINS)):
            metrics[f"h_bin{k}"] = float(c)
        metrics["h_mean"] = float(self.state.h.mean())
        metrics["time_gen"] = t_gen
        metrics["time_probe"] = probe_time
        metrics["time_step"] = time.perf_counter() - t0
        return metrics

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, samples: list[RLSample] | None = None) -> float:
        """Mean facial reward (uniform λ, greedy decoding) over ``samples`` (default: the held-out ones); NaN
        without any."""
        samples = self.eval_pool if samples is None else samples
        if not samples:
            return float("nan")
        from accelerate.utils import gather_object

        mine = samples[self.acc.process_index:: self.acc.num_processes]
        vals: list[float] = []
        for s in range(0, len(mine), self.cfg.batch_size):
            chunk = mine[s: s + self.cfg.batch_size]
            _, _, ids, mask = self._rollouts(self._prompt_batch(chunk), 1, greedy=True)
            vals += rewards.facial_reward(self._decode(ids, mask), [c.labels for c in chunk], self.cfg.reward_backend)
        allv = gather_object(vals)
        return float(sum(allv) / len(allv))

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        """A checkpoint of everything ``train(resume=...)`` needs to continue bit-exactly."""
        def write(folder: Path) -> None:
            torch.save({
                "step": self.step, "round": self.round, "round_step": self.round_step, "passes": self.passes,
                "pos": self.pos,
                "order": None if self.order is None else self.order.clone(),
                "sample_state": self.state.state_dict(), "eta": self.weights.eta.clone(),
                "config": self.cfg.to_dict(), "probe": self.probe_names,
                "pool_ids": [f"{s.clip.id}|{s.question}" for s in self.pool],
            }, folder / RL_STATE_FILE)

        return toolkit.save_checkpoint(self.acc, write)

    def load(self, path: str | Path) -> None:
        path = Path(path)
        if path.name == "latest":
            path = self.latest_checkpoint()
        if not (path / RL_STATE_FILE).exists():
            raise FileNotFoundError(f"{path} is not an RL checkpoint (no {RL_STATE_FILE})")
        st = torch.load(path / RL_STATE_FILE, weights_only=False)
        ids = [f"{s.clip.id}|{s.question}" for s in self.pool]
        if st["pool_ids"] != ids:
            raise ValueError(f"checkpoint {path} was written for a different RL pool (other manifest, split, "
                             "pool_fraction or seed)")
        toolkit.resume(self.acc, path)
        self.step, self.round, self.pos, self.order = st["step"], st["round"], st["pos"], st["order"]
        self.round_step, self.passes = st["round_step"], st["passes"]
        self.state = SampleState.from_state_dict(st["sample_state"])
        self.weights.eta.copy_(st["eta"])

    def latest_checkpoint(self) -> Path:
        path = toolkit.latest_checkpoint(self.out, RL_STATE_FILE)
        if path is None:
            raise FileNotFoundError(f"no checkpoint under {self.out / 'checkpoints'} to resume from")
        return path

    # ------------------------------------------------------------------ loop
    def steps_per_round(self) -> int:
        """Every round's length: ``round_passes`` passes' worth of the whole pool in global batches."""
        return math.ceil(self.cfg.round_passes * len(self.pool) / (self.cfg.batch_size * self.acc.num_processes))

    def _pass_order(self) -> torch.Tensor:
        """A shuffled pass over the samples still in the pool (all of them without the recurrent data)."""
        active = self.state.active() if self.cfg.utility_on else torch.arange(len(self.pool))
        g = torch.Generator().manual_seed((self.cfg.seed * 100003 + self.round) * 10007 + self.passes)
        return active[torch.randperm(len(active), generator=g)]

    def _log(self, row: dict[str, float]) -> None:
        """A row of metrics.csv; on the console too every ``log_every`` steps and for every held-out reward."""
        self.history.append({"step": self.step, **row})
        console = "heldout_reward" in row or self.step % self.cfg.log_every == 0
        self.acc.log(row, step=self.step, log_kwargs={"csv": {"console": console}})

    def train(self, resume: str | Path | None = None) -> dict[str, Any]:
        """Run the rounds (or up to ``max_steps``); returns the final metrics and the checkpoint path."""
        with deterministic_kernels(self.cfg.deterministic):
            return self._train(resume)

    def _train(self, resume: str | Path | None) -> dict[str, Any]:
        cfg = self.cfg
        if resume:
            self.load(resume)
        toolkit.start_run(self.acc, cfg)
        if not resume:  # the starting model's held-out reward: Table 4's 'w.o. RL' row, and where each curve starts
            self._log({"round": 0.0, "heldout_reward": self.evaluate()})
        gbs, world = cfg.batch_size * self.acc.num_processes, self.acc.num_processes
        per_round = self.steps_per_round()
        if self.acc.is_main_process and cfg.num_rounds:
            log.info("RL %s%s: pool %d samples, %d round(s) of %d steps, G=%d, %d process(es), reference=%s, "
                     "probe=%s", cfg.algorithm, "" if cfg.utility_on or not cfg.critic_on else " (w.o. RD)",
                     len(self.pool), cfg.num_rounds, per_round, cfg.num_generations, world,
                     self.reference.describe() if self.reference else "none (beta_kl 0)",
                     self.probe_names)
        done = False
        last = batches = None
        while self.round < cfg.num_rounds and not done:
            if cfg.max_steps and self.step >= cfg.max_steps:  # stopped at a round's end: that round saved it
                break
            bar = tqdm(total=per_round, initial=self.round_step, desc=f"{cfg.algorithm} round {self.round + 1}",
                       disable=not (self.progress and self.acc.is_main_process))
            while self.round_step < per_round:
                if cfg.max_steps and self.step >= cfg.max_steps:
                    done = True
                    break
                if self.order is None or self.pos >= len(self.order):
                    self.order, self.pos, batches = self._pass_order(), 0, None
                    self.passes += 1
                if len(self.order) == 0:
                    log.info("round %d: the pool is empty; stopping", self.round + 1)
                    done = True
                    break
                if batches is None:
                    batches = self._pass_batches()
                row = {"round": float(self.round), **self.train_step(*next(batches))}
                self.pos += gbs
                self.step += 1
                self.round_step += 1
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    row["heldout_reward"] = self.evaluate()
                self._log(row)
                bar.update(1)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.round_step < per_round:
                    last = self.save()  # (a round's last step is saved at the round's end, below)
            bar.close()
            if done:  # stopped inside a round (max_steps, or an empty pool): the final model is scored too
                if self.step:
                    self._log({"round": float(self.round), "heldout_reward": self.evaluate()})
                break
            self._log({"round": float(self.round), "heldout_reward": self.evaluate()})
            self.round += 1
            self.round_step, self.passes, self.order, self.pos, batches = 0, 0, None, 0, None
            last = self.save()
            if self.acc.is_main_process:
                from favchat.rl.plots import plot_round_curves

                plot_round_curves(self.out / "metrics.csv", self.out / "reward_per_round.png")
        if done and self.step:
            last = self.save()
        toolkit.end_run(self.acc)
        return {"step": self.step, "round": self.round, "checkpoint": str(last) if last else None,
                "history": self.history}

    def save_model(self, path: str | Path) -> None:
        """The trained policy as a FaVChat checkpoint (model + processor), loadable with from_pretrained."""
        if self.acc.is_main_process:
            self._policy().save_pretrained(path)
            self.processor.save_pretrained(path)
        self.acc.wait_for_everyone()


def run(config: RLConfig, resume: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Build the trainer from a config, train, and save the final policy under ``output_dir/final``."""
    trainer = RLTrainer(config, progress=progress)
    result = trainer.train(resume=resume)
    trainer.save_model(Path(config.output_dir) / "final")
    return result

