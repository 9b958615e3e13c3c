"""``favchat chat``: ask a trained checkpoint about a video, the answer streamed to the terminal.

    favchat chat --model runs/demo/stage3/final --video clip.mp4 --question "What colour is her hair?"
    favchat chat --model runs/demo/stage3/final --video clip.mp4          # interactive: one question a line

The video is decoded and encoded by the two towers once (``ChatSession``); every later question about
it reuses those states, so only the prompt-guided levels and the LLM run again.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from favchat.cli import CommandError


class ChatSession:
    """A model, its processor and one video's cached encoder states, with the conversation so far."""

    def __init__(self, model_dir: str | Path, video: str | Path, frames: int | None = None, device: str | None = None,
                 face_detector: str | None = None):
        import torch

        from favchat import FaVChatForConditionalGeneration, FaVChatProcessor

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a FaVChat checkpoint (no config.json)")
        overrides = {"num_general_frames": frames, "num_face_frames": frames} if frames else {}
        if face_detector:
            overrides["face_detector"] = face_detector
        self.processor = FaVChatProcessor.from_pretrained(model_dir, **overrides)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = FaVChatForConditionalGeneration.from_pretrained(model_dir).to(self.device).eval()
        self.video = self.processor.load_video(video)  # raises VideoDecodeError with the reason
        general, face = self.processor.pixel_values([self.video])
        with torch.inference_mode():
            self.features = self.model.encode_video(general.to(self.device), face.to(self.device))
        self.history: list[tuple[str, str]] = []

    def ask(self, question: str, max_new_tokens: int = 128, do_sample: bool = False, temperature: float = 0.7,
            top_p: float = 0.9) -> Iterator[str]:
        """Stream the answer's text pieces; the exchange joins the history when the answer is complete."""
        import torch
        from transformers import TextIteratorStreamer

        batch = self.processor(videos=[self.video], questions=[question], history=[self.history])
        inputs = {k: v.to(self.device) for k, v in batch.items()
                  if k not in ("general_pixel_values", "face_pixel_values")}
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=False, skip_special_tokens=True)
        error: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, video_features=self.features, max_new_tokens=max_new_tokens,
                                        do_sample=do_sample, temperature=temperature, top_p=top_p, streamer=streamer)
            except BaseException as e:  # surfaced in the caller's thread below
                error.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            yield piece
        thread.join()
        if error:
            raise error[0]
        self.history.append((question, "".join(pieces).strip()))


def chat(model: str, video: str, question: str | None = None, frames: int | None = None,
         max_new_tokens: int = 128, sample: bool = False, temperature: float = 0.7, top_p: float = 0.9,
         face_detector: Literal["auto", "haar", "yuface", "mediapipe"] | None = None,
         device: str | None = None) -> int:
    """Ask a checkpoint questions about a video (streamed answers; interactive without a question).

    Without --question, reads one question per line from standard input; the video is encoded once for all of
    them.

    Args:
        model: Checkpoint folder (e.g. a training run's final/).
        video: Video file.
        question: The question; without it, the interactive mode.
        frames: Frames sampled per stream (None: the checkpoint's).
        max_new_tokens: Longest answer.
        sample: Sample instead of greedy decoding.
        temperature: Sampling temperature.
        top_p: Nucleus sampling.
        face_detector: Crop faces for the facial stream (None: the checkpoint's setting).
        device: Torch device (None: cuda when available).
    """
    from favchat.data.video import VideoDecodeError

    if frames is not None and frames < 1:
        raise CommandError("--frames must be >= 1")
    try:
        session = ChatSession(model, video, frames=frames, device=device, face_detector=face_detector)
    except (FileNotFoundError, VideoDecodeError, ValueError) as e:
        raise CommandError(e) from e
    gen = {"max_new_tokens": max_new_tokens, "do_sample": sample, "temperature": temperature, "top_p": top_p}

    def answer(q: str) -> None:
        for piece in session.ask(q, **gen):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")

    if question:
        answer(question)
        return 0
    if sys.stdin.isatty():
        print(f"video: {video} (face stream: {session.video.face_source}); one question a line, "
              "Ctrl-D to quit", file=sys.stderr)
    for line in sys.stdin:
        q = line.strip()
        if q in ("exit", "quit"):
            break
        if q:
            answer(q)
    return 0
