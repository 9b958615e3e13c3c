"""The ``favchat`` command line: one table of subcommands, each a typed function.

jsonargparse builds a command's options from its function's signature. A parameter named ``config`` whose
type is a dataclass gives the command its options: one per field, sections as ``--section.key`` (``favchat
train --optim.lr 3e-4``); every other parameter is an option of its own (a ``bool`` one a switch, ``--resume``
/ ``--no_resume``). ``--config FILE`` reads any of the options from YAML, the command line overriding it, and
``--print_config`` shows the resolved config. ``--help`` lists every option with its type, default and help:
a field's attribute docstring (the string literal under it), a parameter's line in the function docstring's
``Args:``. The first line of the function's docstring is the command's line in ``favchat --help``, read from the
source without importing the module, so help never imports torch.

Adding a subcommand (``favchat serve`` is one: favchat/serve/cli.py):

1. In a module that imports nothing heavy at import time (torch and the model are imported inside the
   function), write ``def serve(config: ServeConfig) -> int`` with a docstring (first
   line: what it does; ``Args:`` for the plain parameters), ``ServeConfig`` a dataclass whose fields carry
   attribute docstrings and whose ``__post_init__`` rejects bad values with a message saying how to fix them.
2. Add ``"serve": "favchat.serve.cli:serve"`` to ``COMMANDS``. A dict there is a command group: ``favchat eval
   dfew`` is ``COMMANDS["eval"]["dfew"]``, ``favchat data import-celebv`` one more entry under ``"data"``.
3. tests/test_cli.py checks every command's ``--help`` lists every field with its help.

The function returns the exit code; a ``CommandError`` (or a ``ConfigError`` from a bad config) prints
``favchat <command>: <message>`` and exits 2, before any work when raised before it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import logging
import sys
import typing
from collections.abc import Callable
from typing import Any

# name -> "module:function", or a dict of them (a command group); ``favchat --help`` lists them in this order.
COMMANDS: dict[str, Any] = {
    "demo": "favchat.demo:demo",
    "init": "favchat.model.assemble:init",
    "train": "favchat.train.cli:train",
    "pretrain-face": "favchat.train.cli:pretrain_face",
    "rl": "favchat.rl.cli:rl",
    "chat": "favchat.serve.chat:chat",
    "serve": "favchat.serve.cli:serve",
    "synth": "favchat.data.synth_cli:synth",
    "experiment": {
        "ablations": "favchat.experiments.ablations:ablations",
    },
    "eval": {
        "facesynth": "favchat.eval.cli:facesynth",
        "manifest": "favchat.eval.cli:manifest",
        "dfew": "favchat.eval.cli:dfew",
        "mafw": "favchat.eval.cli:mafw",
        "captions": "favchat.eval.cli:captions",
        "ytf": "favchat.eval.cli:ytf",
        "emer": "favchat.eval.cli:emer",
        "frames": "favchat.eval.cli:frames",
    },
    "data": {
        "filter": "favchat.data.pipeline.cli:filter_videos",
        "trim": "favchat.data.pipeline.cli:trim",
        "extract": "favchat.data.pipeline.cli:extract",
        "annotate": "favchat.data.pipeline.cli:annotate",
        "qa": "favchat.data.pipeline.cli:qa",
        "build": "favchat.data.pipeline.cli:build",
        "merge": "favchat.data.pipeline.cli:merge",
        "train-extractor": "favchat.data.pipeline.cli:train_extractor",
        "review": "favchat.data.pipeline.cli:review",
        "import-celebv": "favchat.data.pipeline.cli:import_celebv",
    },
}
GROUP_HELP = {
    "experiment": "experiments that measure the paper's claims on FaceSynth: ablations",
    "eval": "evaluate a checkpoint on the paper's benchmarks (or score predictions)",
    "data": "the dataset pipeline: filter, trim, extract, annotate, qa, build, merge, train-extractor, review, "
            "import-celebv",
}


class CommandError(Exception):
    """A bad input a command found: printed as ``favchat <command>: <message>``, exit code 2."""


def summary(spec: str) -> str:
    """The first line of a command function's docstring, read from its module's source (nothing imported)."""
    module, name = spec.split(":")
    origin = importlib.util.find_spec(module).origin
    tree = ast.parse(open(origin, encoding="utf-8").read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return (ast.get_docstring(fn) or "").split("\n")[0].rstrip(".")


def _resolve(spec: str) -> Callable[..., Any]:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _config_type(fn: Callable[..., Any]) -> type | None:
    hint = typing.get_type_hints(fn).get("config")
    return hint if hint is not None and dataclasses.is_dataclass(hint) else None


def command_parser(prog: str, fn: Callable[..., Any]):
    """The parser of one command function (see the module docstring)."""
    from jsonargparse import ActionYesNo, ArgumentParser

    from favchat.config import config_parser

    cls = _config_type(fn)
    doc = inspect.getdoc(fn) or ""
    description = doc.split("\n\nArgs:")[0]
    parser = config_parser(cls, prog, description) if cls else ArgumentParser(prog=prog, description=description)
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters.values() if p.name != "config"]
    switches = {p.name for p in params if hints.get(p.name) is bool}
    if len(switches) < len(params):
        parser.add_function_arguments(fn, None, skip={"config", *switches}, as_group=False)
    helps = _arg_helps(doc)
    for p in params:
        if p.name in switches:
            parser.add_argument(f"--{p.name}", action=ActionYesNo, default=p.default, help=helps.get(p.name))
    if hasattr(fn, "cli_setup"):  # a command's own changes to its parser (favchat demo: the packaged recipe)
        fn.cli_setup(parser)
    return parser


def _arg_helps(doc: str) -> dict[str, str]:
    from docstring_parser import parse

    return {p.arg_name: p.description for p in parse(doc).params}


def run_command(name: str, spec: str, argv: list[str]) -> int:
    from favchat.config import ConfigError, build

    fn = _resolve(spec)
    parser = command_parser(f"favchat {name}", fn)
    if hasattr(fn, "cli_argv"):  # a command's shorthands (favchat demo --quick: --config <the quick recipe>)
        argv = fn.cli_argv(argv)
    try:
        namespace = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error that argparse printed
        return int(e.code or 0)
    except Exception as e:  # jsonargparse's ArgumentError: an unknown key, a value of the wrong type
        print(f"favchat {name}: bad config: {e}", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {}
    try:
        cls = _config_type(fn)
        if cls is not None:
            kwargs["config"] = build(cls, parser, namespace)
        values = parser.instantiate(namespace)
        for p in inspect.signature(fn).parameters:
            if p != "config":
                kwargs[p] = values[p]
    except ConfigError as e:
        print(f"favchat {name}: bad config: {e}", file=sys.stderr)
        return 2
    try:
        return int(fn(**kwargs) or 0)
    except CommandError as e:
        print(f"favchat {name}: {e}", file=sys.stderr)
        return 2


def _help(commands: dict[str, Any], prog: str, heading: str) -> str:
    lines = [f"usage: {prog} [-h] [--version] [-v] COMMAND ...", "", heading, "", "commands:"]
    for name, spec in commands.items():
        text = GROUP_HELP.get(name) if isinstance(spec, dict) else summary(spec)
        lines.append(f"  {name:<16}{text}")
    lines += ["", f"`{prog} COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def _expected_warnings(record: logging.LogRecord) -> bool:
    """False for accelerate's warnings about what the trainers do on purpose, at every checkpoint: rotating them
    (``keep_checkpoints``) and saving tied embeddings once (a resumed run trains the same weights, tested)."""
    message = record.getMessage()
    return not (record.name.startswith("accelerate") and ("to make room for new checkpoint" in message
                                                          or "Removed shared tensor" in message))


def main(argv: list[str] | None = None) -> int:
    from favchat import __version__

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in ("-v", "--verbose", "--version"):
        if argv.pop(0) == "--version":
            print(f"favchat {__version__}")
            return 0
        verbose = True
    commands, prog = COMMANDS, "favchat"
    heading = "FaVChat: facial video understanding with prompt-guided encoders and DE-GRPO."
    while True:
        if not argv or argv[0] in ("-h", "--help"):
            print(_help(commands, prog, heading))
            return 0
        name = argv.pop(0)
        if name not in commands:
            print(f"{prog}: unknown command {name!r}; choose from {', '.join(commands)}", file=sys.stderr)
            return 2
        if not isinstance(commands[name], dict):
            break
        commands, prog, heading = commands[name], f"{prog} {name}", GROUP_HELP[name]
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # libraries' per-file chatter (accelerate logs every checkpoint file it writes)
        for lib in ("accelerate", "httpx", "httpx2"):  # httpx2: the openai client's HTTP layer, a line per request
            logging.getLogger(lib).setLevel(logging.WARNING)
        for handler in logging.getLogger().handlers:
            handler.addFilter(_expected_warnings)
    try:
        return run_command(f"{prog[len('favchat '):]} {name}".strip(), commands[name], argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
