"""FaVChatProcessor: videos and questions → the model's inputs.

A video (file path, or RGB uint8 frames (T, H, W, 3)) is sampled uniformly into two streams: general
frames resized to ``image_size`` and facial frames cropped around the detected face (``face_detector``)
and resized to ``face_image_size``; without a detector, or when no face is found in any sampled frame,
the full frame stands in and ``VideoInputs.face_source`` says so. Texts go through the LLM tokenizer's
chat template with one ``<video>`` placeholder in the first user turn, expanded to N_q tokens (the
processor owns token counting; the model checks the count again before its scatter).

``load_video`` is the expensive part (decoding, face detection) and returns small uint8 arrays, so a
dataset can call it in DataLoader workers and a collator can call ``processor(...)`` on the results:
both the processor and ``VideoInputs`` pickle (a detector is rebuilt by name in the worker).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoProcessor, ProcessorMixin
from transformers.video_processing_utils import VideoProcessorMixin

from favchat.data.faces import Box, crop_face, get_detector
from favchat.data.video import VideoDecodeError, probe, read_frames, sample_indices
from favchat.model.configuration import FaVChatConfig


@dataclass
class VideoInputs:
    general: np.ndarray  # (Tg, H, W, 3) uint8
    face: np.ndarray  # (Tf, h, w, 3) uint8
    face_source: str  # "detector" | "full_frame"
    face_indices: tuple[int, ...] = ()  # the video frames the facial frames were sampled at


def check_frames(frames: Any, what: str = "frames") -> np.ndarray:
    """Frames must be an RGB uint8 array (T, H, W, 3) with T ≥ 1; anything else is a clear error."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"{what} must be a numpy array (T, H, W, 3) of uint8, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{what} must have dtype uint8 (RGB 0..255), got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (T, H, W, 3), got {frames.shape}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"{what} is empty: shape {frames.shape}")
    return frames


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if f.shape[0] > size
                                else cv2.INTER_LINEAR) for f in frames])


class FaVChatVideoProcessor(VideoProcessorMixin):
    """Videos → the two streams' pixel values: general frames resized to ``image_size``, facial frames cropped
    around the face ``face_detector`` finds (None, a ``get_detector`` name or a detector) and resized to
    ``face_image_size``. Saved as ``video_preprocessor_config.json``."""

    model_input_names = ["general_pixel_values", "face_pixel_values"]
    SETTINGS = ("num_general_frames", "num_face_frames", "image_size", "face_image_size", "image_mean", "image_std",
                "face_margin")

    def __init__(self, num_general_frames: int = 8, num_face_frames: int = 8, image_size: int = 32,
                 face_image_size: int = 32, image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225), face_detector: Any = None,
                 face_margin: float = 0.25, **kwargs: Any):
        kwargs.pop("video_processor_type", None)  # what to_dict writes for AutoVideoProcessor
        super().__init__(**kwargs)
        self.num_general_frames, self.num_face_frames = num_general_frames, num_face_frames
        self.image_size, self.face_image_size = image_size, face_image_size
        self.image_mean, self.image_std, self.face_margin = list(image_mean), list(image_std), face_margin
        self._detector_name = face_detector if isinstance(face_detector, str) else getattr(face_detector, "name", None)
        self._detector = None if isinstance(face_detector, str) else face_detector

    def settings(self) -> dict[str, Any]:
        """What the pixel values depend on (what ``save_pretrained`` writes)."""
        return {k: getattr(self, k) for k in self.SETTINGS} | {"face_detector": self._detector_name}

    def to_dict(self) -> dict[str, Any]:
        return self.settings() | {"video_processor_type": type(self).__name__}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._detector_name is not None:
            state["_detector"] = None  # detectors hold native handles; rebuilt by name where unpickled
        return state

    @property
    def face_detector(self):
        if self._detector is None and self._detector_name is not None:
            self._detector = get_detector(self._detector_name)
        return self._detector

    def preprocess(self, videos: Sequence[VideoInputs | str | os.PathLike | np.ndarray], **kwargs: Any):
        """Pixel values of a batch of videos (files, frame arrays or ``load_video`` results)."""
        from transformers import BatchFeature

        loaded = [v if isinstance(v, VideoInputs) else self.load_video(v) for v in videos]
        general, face = self.pixel_values(loaded)
        return BatchFeature(data={"general_pixel_values": general, "face_pixel_values": face})

    # ------------------------------------------------------------------ video
    def load_video(self, video: str | os.PathLike | np.ndarray,
                   frame_range: tuple[int, int] | None = None) -> VideoInputs:
        """Uniformly sampled frames for both streams (face crops when a detector is set)."""
        start, end = frame_range if frame_range is not None else (0, None)
        if isinstance(video, np.ndarray):
            frames = check_frames(video, "video frames")
            n = frames.shape[0]
            g_idx = sample_indices(n, self.num_general_frames, start, end)
            f_idx = sample_indices(n, self.num_face_frames, start, end)
            general, face = frames[g_idx], frames[f_idx]
        elif isinstance(video, (str, os.PathLike)):
            n = probe(video).num_frames
            if start >= n:
                raise VideoDecodeError(f"{video}: frame range starts at {start} but the video has {n} frames")
            g_idx = sample_indices(n, self.num_general_frames, start, end)
            f_idx = sample_indices(n, self.num_face_frames, start, end)
            wanted = sorted(set(g_idx) | set(f_idx))
            frames = read_frames(video, wanted)
            pos = {i: k for k, i in enumerate(wanted)}
            general = frames[[pos[i] for i in g_idx]]
            face = frames[[pos[i] for i in f_idx]]
        else:
            raise TypeError(f"a video is a file path or a uint8 array (T, H, W, 3), got {type(video).__name__}")
        face, source = self._faces(face)
        return VideoInputs(_resize(general, self.image_size), face, source, tuple(f_idx))

    def _faces(self, frames: np.ndarray) -> tuple[np.ndarray, str]:
        det = self.face_detector
        if det is None:
            return _resize(frames, self.face_image_size), "full_frame"
        boxes: list[Box | None] = [next(iter(det.detect(f)), None) for f in frames]
        found = [i for i, b in enumerate(boxes) if b is not None]
        if not found:
            return _resize(frames, self.face_image_size), "full_frame"
        # A frame where detection missed borrows the box of the nearest frame where it did not.
        crops = [crop_face(f, boxes[min(found, key=lambda j: abs(j - i))], self.face_image_size, self.face_margin)
                 for i, f in enumerate(frames)]
        return np.stack(crops), "detector"

    def _pixels(self, frames: np.ndarray, size: int):
        import torch

        frames = check_frames(frames)
        if frames.shape[1:3] != (size, size):
            raise ValueError(f"frames must be {size}x{size} after load_video, got {frames.shape[1:3]}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return (x - mean) / std

    def pixel_values(self, videos: Sequence[VideoInputs]):
        """Normalised pixel tensors of loaded videos: general (B, Tg, 3, H, W) and face (B, Tf, 3, h, w)."""
        import torch

        return (torch.stack([self._pixels(v.general, self.image_size) for v in videos]),
                torch.stack([self._pixels(v.face, self.face_image_size) for v in videos]))


class FaVChatProcessor(ProcessorMixin):
    """See the module docstring: the video processor (``FaVChatVideoProcessor``) and the LLM's tokenizer, with
    the prompt format (``num_query_tokens`` placeholders, ``system_prompt``). ``AutoProcessor`` loads a saved one."""

    def __init__(self, video_processor: FaVChatVideoProcessor | None = None, tokenizer=None, num_query_tokens: int = 8,
                 video_token: str = "<video>", system_prompt: str | None = None, chat_template: str | None = None):
        if tokenizer is None:
            raise ValueError("FaVChatProcessor needs the LLM's tokenizer")
        self.num_query_tokens, self.video_token, self.system_prompt = num_query_tokens, video_token, system_prompt
        if video_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [video_token]})
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template; set tokenizer.chat_template (e.g. ChatML)")
        super().__init__(video_processor or FaVChatVideoProcessor(), tokenizer, chat_template=chat_template)

    # ------------------------------------------------------------------ construction / persistence
    @classmethod
    def from_config(cls, config, tokenizer=None, face_detector: Any = None) -> FaVChatProcessor:
        """Settings from a FaVChatConfig; the tokenizer of its preset when none is given. ``face_detector``
        replaces the config's (``config.face_detector``, a detector name)."""
        if tokenizer is None:
            tokenizer = default_tokenizer(config)
        video = FaVChatVideoProcessor(num_general_frames=config.num_general_frames,
                                      num_face_frames=config.num_face_frames, image_size=config.image_size,
                                      face_image_size=config.face_image_size, image_mean=config.image_mean,
                                      image_std=config.image_std,
                                      face_detector=face_detector if face_detector is not None else config.face_detector)
        proc = cls(video, tokenizer, num_query_tokens=config.num_query_tokens, video_token=config.video_token,
                   system_prompt=config.system_prompt)
        if config.video_token_id is None:
            config.video_token_id = proc.video_token_id
        elif config.video_token_id != proc.video_token_id:
            raise ValueError(f"the tokenizer's {config.video_token!r} id {proc.video_token_id} differs from "
                             f"config.video_token_id {config.video_token_id}")
        if len(tokenizer) > config.text_config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the LLM only "
                             f"{config.text_config.vocab_size} embeddings")
        return proc

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides: Any) -> FaVChatProcessor:
        """A saved processor; ``overrides`` replace video settings (``num_general_frames``, ``face_detector``...)."""
        import favchat.model.configuration  # noqa: F401  (AutoTokenizer reads config.json through AutoConfig)

        video = {k: overrides.pop(k) for k in list(overrides) if k in (*FaVChatVideoProcessor.SETTINGS, "face_detector")}
        if not (Path(path) / "processor_config.json").is_file():
            raise FileNotFoundError(f"{path}: no processor_config.json (not a saved FaVChatProcessor)")
        proc = super().from_pretrained(path, **overrides)
        if video:
            proc.video_processor = FaVChatVideoProcessor(**(proc.video_processor.settings() | video))
        return proc

    # transformers finds a video processor's class through AutoVideoProcessor, which needs torchvision (nothing
    # else here does): these two name FaVChatVideoProcessor directly.
    @classmethod
    def _get_arguments_from_pretrained(cls, path, processor_dict=None, **kwargs) -> list[Any]:
        return [FaVChatVideoProcessor.from_pretrained(path),
                cls._load_tokenizer_from_pretrained("tokenizer", path, **kwargs)]

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        if argument_name != "video_processor":
            return super().check_argument_for_proper_class(argument_name, argument)
        if not isinstance(argument, FaVChatVideoProcessor):
            raise TypeError(f"video_processor must be a FaVChatVideoProcessor, got {type(argument).__name__}")
        return FaVChatVideoProcessor

    def settings(self) -> dict[str, Any]:
        """What the processor's output depends on besides the tokenizer."""
        return self.video_processor.settings() | {"num_query_tokens": self.num_query_tokens,
                                                  "video_token": self.video_token, "system_prompt": self.system_prompt}

    # The video side, as the processor's own (a dataset's load_video, the chat's frames).
    def load_video(self, video: str | os.PathLike | np.ndarray,
                   frame_range: tuple[int, int] | None = None) -> VideoInputs:
        return self.video_processor.load_video(video, frame_range)

    def pixel_values(self, videos: Sequence[VideoInputs]):
        return self.video_processor.pixel_values(videos)

    @property
    def num_general_frames(self) -> int:
        return self.video_processor.num_general_frames

    @property
    def num_face_frames(self) -> int:
        return self.video_processor.num_face_frames

    @property
    def image_size(self) -> int:
        return self.video_processor.image_size

    @property
    def face_image_size(self) -> int:
        return self.video_processor.face_image_size

    @property
    def face_detector(self):
        return self.video_processor.face_detector

    # ------------------------------------------------------------------ text
    def build_messages(self, question: str, history: Sequence[tuple[str, str]] = (),
                       answer: str | None = None) -> list[dict[str, str]]:
        """Chat messages with the placeholder opening the first user turn."""
        if not question or not question.strip():
            raise ValueError("the question is empty")
        for text in (question, answer or "", *(t for turn in history for t in turn)):
            if self.video_token in text:
                raise ValueError(f"texts must not contain the video placeholder {self.video_token!r}: the "
                                 "processor places it")
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for user, assistant in history:
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        msgs.append({"role": "user", "content": question})
        first_user = next(m for m in msgs if m["role"] == "user")
        first_user["content"] = f"{self.video_token}\n{first_user['content']}"
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    def tokenize_prompt(self, prompt: str) -> list[int]:
        """Token ids of a rendered prompt with its single placeholder expanded to N_q tokens."""
        count = prompt.count(self.video_token)
        if count != 1:
            raise ValueError(f"the prompt must contain the video placeholder {self.video_token!r} exactly once, "
                             f"found {count} times")
        ids = self.tokenizer(prompt.replace(self.video_token, self.video_token * self.num_query_tokens),
                             add_special_tokens=False)["input_ids"]
        if ids.count(self.video_token_id) != self.num_query_tokens:
            raise ValueError(f"after tokenisation the prompt has {ids.count(self.video_token_id)} video tokens, "
                             f"expected N_q={self.num_query_tokens} (does the tokenizer split {self.video_token!r}?)")
        return ids

    def encode_text(self, question: str, answer: str | None = None,
                    history: Sequence[tuple[str, str]] = ()) -> tuple[list[int], list[int] | None]:
        """(input ids, labels): labels are -100 except on the answer's tokens (None without an answer)."""
        tmpl = self.tokenizer.apply_chat_template
        prompt = tmpl(self.build_messages(question, history), tokenize=False, add_generation_prompt=True)
        ids = self.tokenize_prompt(prompt)
        if answer is None:
            return ids, None
        full = tmpl(self.build_messages(question, history, answer), tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template renders the conversation with an answer differently from the "
                             "prompt it generates from; the answer tokens cannot be isolated")
        answer_ids = self.tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        return ids + answer_ids, [-100] * len(ids) + answer_ids

    def __call__(self, videos: Sequence[VideoInputs | str | os.PathLike | np.ndarray] | None,
                 questions: Sequence[str],
                 answers: Sequence[str] | None = None, history: Sequence[Sequence[tuple[str, str]]] | None = None,
                 return_tensors: str = "pt", padding_side: str | None = None):
        """A padded batch. ``padding_side`` defaults to right with answers (training), left without
        (generation, so every prompt ends where the answer starts). ``videos=None``: text only, no pixel
        values (a recipe then fills the video slots: the model's ``video_embeds``)."""
        from transformers import BatchFeature

        if return_tensors != "pt":
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        n = len(questions)
        if any(x is not None and len(x) != n for x in (videos, answers, history)):
            raise ValueError(f"videos, answers and history need one entry per question ({n}); lengths: "
                             f"{[None if x is None else len(x) for x in (videos, answers, history)]}")
        side = padding_side or ("right" if answers is not None else "left")
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        texts = [self.encode_text(questions[i], None if answers is None else answers[i],
                                  () if history is None else history[i]) for i in range(n)]
        q_ids = [self.tokenizer(q, add_special_tokens=False)["input_ids"] for q in questions]
        pad = self.tokenizer.pad_token_id
        input_ids, attention = _pad([t[0] for t in texts], pad, side)
        data = {"input_ids": input_ids, "attention_mask": attention}
        if answers is not None:
            data["labels"], _ = _pad([t[1] for t in texts], -100, side)
        data["question_ids"], data["question_mask"] = _pad(q_ids, pad, "right")
        if videos is not None:
            data |= self.video_processor(videos).data
        return BatchFeature(data=data)

    def batch_decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids, skip_special_tokens: bool = True, **kwargs) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)


def _pad(seqs: list[list[int]], value: int, side: str):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def default_tokenizer(config):
    """The tokenizer that goes with a preset: built in code for ``tiny``, SmolLM2's for ``smollm2``, the
    LLM folder's otherwise."""
    if config.preset == "tiny":
        from favchat.model.tokenizer import build_tiny_tokenizer

        return build_tiny_tokenizer()
    if config.llm_path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(config.llm_path)
    raise ValueError("no tokenizer given and the config names no llm_path to load one from")


AutoProcessor.register(FaVChatConfig, FaVChatProcessor, exist_ok=True)
