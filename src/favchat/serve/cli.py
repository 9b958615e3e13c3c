"""``favchat serve``: the command line of the server (favchat.serve.server), one option per ``ServeConfig``
field, its help the field's docstring."""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from favchat.serve.settings import ServeConfig, field_docs

DESCRIPTION = """\
Serve a checkpoint over HTTP: an OpenAI-compatible chat API (POST /v1/chat/completions with a video_url part,
GET /v1/models, GET /health) and a web page at / to upload a video and ask about it. Examples, the protocol and
the limits: docs/serve.md.

  favchat serve --model runs/demo/stage3/final --allowed-root runs/demo/data/videos
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible API and a web page for a checkpoint",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    docs = field_docs(ServeConfig)
    for f in fields(ServeConfig):
        flag = "--" + ("allowed-root" if f.name == "allowed_roots" else f.name.replace("_", "-"))
        if f.name == "allowed_roots":
            p.add_argument(flag, dest=f.name, action="append", default=[], metavar="DIR", help=docs[f.name])
        elif f.default is MISSING:
            p.add_argument(flag, required=True, help=docs[f.name])
        else:
            kind = str if f.default is None else type(f.default)
            shown = "" if f.default is None else f" (default: {f.default})"
            p.add_argument(flag, type=kind, default=f.default, help=docs[f.name] + shown)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from favchat.serve.server import serve

    try:
        config = ServeConfig(**{f.name: getattr(args, f.name) for f in fields(ServeConfig)})
    except ValueError as e:
        print(f"favchat serve: {e}", file=sys.stderr)
        return 2
    return serve(config)
