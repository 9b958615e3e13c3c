"""The ``favchat`` command line. Each subcommand lives beside the code it drives.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=handler`` on it; handlers import their heavy dependencies themselves, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Subcommand modules, in the order ``favchat --help`` lists them.
COMMAND_MODULES = (
    "favchat.demo",
    "favchat.model.assemble",
    "favchat.train.cli",
    "favchat.serve.chat",
    "favchat.data.synth_cli",
    "favchat.eval.cli",
    "favchat.data.pipeline.cli",
    "favchat.rl.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from favchat import __version__

    parser = argparse.ArgumentParser(
        prog="favchat",
        description="FaVChat: facial video understanding with prompt-guided encoders and DE-GRPO.",
    )
    parser.add_argument("--version", action="version", version=f"favchat {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Commands that take config overrides (``--optim.lr 1e-4``) set ``accepts_overrides``; for the
    # others an unknown argument is an error, as usual.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # libraries' per-file chatter (accelerate logs every checkpoint file it writes)
        for name in ("accelerate", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
