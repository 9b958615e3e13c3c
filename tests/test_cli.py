"""The command line: every command's --help lists every option with its help; `favchat --help` imports no torch."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing

import pytest

from favchat.cli import COMMANDS, _config_type, _resolve, main


def _commands() -> list[tuple[str, str]]:
    out = []
    for name, spec in COMMANDS.items():
        out += [(f"{name} {sub}", s) for sub, s in spec.items()] if isinstance(spec, dict) else [(name, spec)]
    return out


def _field_options(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(--option, its help) for every field of a dataclass, sections flattened as jsonargparse names them."""
    from docstring_parser import parse_from_object

    docs = {p.arg_name: p.description for base in reversed(cls.__mro__) if dataclasses.is_dataclass(base)
            for p in parse_from_object(base).params}
    out = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            out += _field_options(hint, f"{prefix}{f.name}.")
        else:
            out.append((f"--{prefix}{f.name}", docs.get(f.name) or ""))
    return out


def _help(argv: list[str], capsys) -> str:
    assert main([*argv, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("command", "spec"), _commands(), ids=[c for c, _ in _commands()])
def test_every_option_shows_in_help_with_its_help_text(command, spec, capsys):
    fn = _resolve(spec)
    text = _help(command.split(), capsys)
    options = _field_options(_config_type(fn)) if _config_type(fn) else []
    options += [(f"--{p}", "") for p in inspect.signature(fn).parameters if p != "config"]
    for option, doc in options:
        assert f"{option} " in text or f"{option}," in text, f"favchat {command} --help lacks {option}"
        assert not doc or " ".join(doc.split()) in text, f"favchat {command} --help lacks the help of {option}"
    for option, _ in options:  # every field has its help: an attribute docstring (a test of the code, not the help)
        assert option not in {o for o, d in options if not d and "." in o}, f"{option} has no attribute docstring"


@pytest.mark.parametrize("command", ["train", "rl", "demo"])
def test_the_training_commands_list_every_field_with_type_default_and_help(command, capsys):
    from favchat.demo import DemoConfig
    from favchat.recipes.tiny_demo.config import DemoStageConfig
    from favchat.rl.config import RLConfig
    from favchat.train.config import TrainConfig

    text = _help([command], capsys)
    cls = {"train": TrainConfig, "rl": RLConfig, "demo": DemoConfig}[command]
    options = _field_options(cls)
    if command == "demo":  # the stages dict: each stage's fields as --stages.K.<field>
        options += [(o.replace("--", "--stages.K.", 1), d) for o, d in _field_options(DemoStageConfig)]
    for option, doc in options:
        assert doc, f"{cls.__name__}: {option} has no help"
        assert " ".join(doc.split()) in text and option in text
    assert "(type: float, default: 0.0001)" in _help(["train"], capsys)  # optim.lr's type and default


def test_help_lists_the_commands_without_importing_torch():
    code = "import sys; from favchat.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
    for name in COMMANDS:
        assert f"  {name} " in out


def test_unknown_commands_and_options_are_errors(capsys):
    assert main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    assert main(["train", "--optim.learning_rate", "1"]) == 2
    assert main(["eval"]) == 0 and "dfew" in capsys.readouterr().out
