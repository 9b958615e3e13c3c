"""The settings of ``favchat serve``: one dataclass, each field documented where it is declared.

The command line (``favchat serve --help``) is built from these fields and their docstrings; docs/serve.md
explains the limits in more words.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

MiB = 2**20


@dataclass
class ServeConfig:
    """Where the server listens, what it serves, and the limits that keep it up."""

    model: str
    """Checkpoint folder to serve (e.g. a training run's final/)."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 for every interface; put a TLS reverse proxy in front)."""
    port: int = 8000
    """Port to listen on (0: any free port, printed when the server starts)."""
    allowed_roots: str | list[str] = field(default_factory=list)
    """Folders whose videos requests may name as file:// URLs: one folder, or a list ('[a/, b/]'); none:
    file:// URLs are refused and videos must be uploaded as data: URLs."""
    api_key_env: str | None = None
    """Name of an environment variable holding the API key that every /v1 request must send as
    'Authorization: Bearer KEY' (the key itself is never a command-line argument); unset: no key."""
    model_name: str | None = None
    """The model id clients send and /v1/models lists (default: the checkpoint folder's name, or its parent's
    for a folder named final)."""
    device: str | None = None
    """Torch device (default: cuda when available, else cpu)."""
    max_video_mb: float = 32.0
    """Largest video file accepted, uploaded or read from an allowed root, in MiB (a request body may be a
    third larger: base64)."""
    max_duration_s: float = 300.0
    """Longest video accepted, in seconds (frame count / frame rate)."""
    max_frames: int = 9000
    """Most frames a video may have (decoding reads up to the last sampled frame)."""
    max_side: int = 1920
    """Largest width or height of a video accepted, in pixels."""
    cache_mb: float = 512.0
    """Memory for the towers' states of recent videos (kept on the model's device), in MiB; the least recently
    used video goes first. 0: no cache."""
    max_pending: int = 32
    """Requests handled at once (decoding, waiting for the model, or answering); one more is answered 503 with
    Retry-After."""
    max_tokens: int = 512
    """The most tokens a request may ask to generate (max_tokens)."""
    default_max_tokens: int = 128
    """Tokens generated when a request does not say (max_tokens absent)."""
    temperature: float = 0.0
    """Sampling temperature when a request does not say (0: greedy decoding)."""
    preview_frames: int = 4
    """Frames shown by the web page for a chosen video (POST /v1/favchat/frames)."""

    def __post_init__(self) -> None:
        if isinstance(self.allowed_roots, str):
            self.allowed_roots = [self.allowed_roots]
        if not (Path(self.model) / "config.json").is_file():
            raise ValueError(f"--model {self.model}: not a FaVChat checkpoint (no config.json)")
        for name in ("max_video_mb", "max_duration_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_frames", "max_side", "max_pending", "max_tokens", "default_max_tokens", "preview_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.cache_mb < 0:
            raise ValueError(f"--cache_mb must be >= 0, got {self.cache_mb}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"--default_max_tokens {self.default_max_tokens} exceeds --max_tokens {self.max_tokens}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"--temperature must be in [0, 2], got {self.temperature}")
        for root in self.allowed_roots:
            if not Path(root).is_dir():
                raise ValueError(f"--allowed_roots {root}: not a folder")
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ValueError(f"--api_key_env {self.api_key_env}: the environment variable is not set (or empty); "
                             "export it with the key clients must send")

    @property
    def served_name(self) -> str:
        if self.model_name:
            return self.model_name
        path = Path(self.model).resolve()
        return path.parent.name if path.name == "final" and path.parent.name else path.name

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * MiB)

    @property
    def max_body_bytes(self) -> int:
        """A request carrying the largest video as base64, plus room for the rest of the JSON."""
        return math.ceil(self.max_video_bytes * 4 / 3) + MiB

    @property
    def api_key(self) -> str | None:
        return os.environ[self.api_key_env] if self.api_key_env else None

