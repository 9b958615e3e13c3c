"""``favchat serve``: the command line of the server (favchat.serve.server), one option per ``ServeConfig``
field, its help the field's docstring."""

from __future__ import annotations

from favchat.serve.settings import ServeConfig


def serve(config: ServeConfig) -> int:
    """An OpenAI-compatible API and a web page for a checkpoint.

    Serves a checkpoint over HTTP: an OpenAI-compatible chat API (POST /v1/chat/completions with a video_url
    part, GET /v1/models, GET /health) and a web page at / to upload a video and ask about it. Examples, the
    protocol and the limits: docs/serve.md.
    """
    from favchat.serve.server import serve as run

    return run(config)
