"""Configs are dataclasses; jsonargparse reads them from YAML files, dicts and command lines.

A field's help is its attribute docstring (a string literal on the line under it), which ``--help`` shows with
the field's type and default. ``load_config(Cls, path, overrides)`` reads a YAML file, applies ``--a.b value``
overrides (or a nested dict) and builds ``Cls``; an unknown key or a value of the wrong type raises
``ConfigError`` naming the key, and so does a check of the dataclass's ``__post_init__``, before any work
starts. ``to_dict`` gives the fully resolved config back (saved with every checkpoint).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, set_parsing_settings

set_parsing_settings(docstring_parse_attribute_docstrings=True)

C = TypeVar("C")


class ConfigError(ValueError):
    pass


def config_parser(cls: type, prog: str | None = None, description: str | None = None) -> ArgumentParser:
    """A parser whose options are the fields of dataclass ``cls`` (sections as ``--section.key``), plus
    ``--config FILE`` (YAML holding any of them; later options override it) and ``--print_config``."""
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_class_arguments(cls, None, as_group=False)
    return parser


def build(cls: type[C], parser: ArgumentParser, namespace: Namespace) -> C:
    """``cls`` from a parsed namespace (its sections instantiated); a failed check raises ``ConfigError``."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    try:
        values = parser.instantiate(namespace)
        return cls(**{k: values[k] for k in names if k in values})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def load_config(cls: type[C], path: str | Path | None = None,
                overrides: Sequence[str] | dict[str, Any] = ()) -> C:
    """``cls`` from a YAML file and overrides: command-line tokens (``["--optim.lr", "3e-4"]``) or a dict."""
    parser = config_parser(cls)
    args = [] if path is None else ["--config", str(path)]
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file not found: {path}")
    # A dict of overrides is one more YAML document, read after the file (the config argument takes text too).
    args += ["--config", yaml.safe_dump(overrides)] if isinstance(overrides, dict) else list(overrides)
    try:
        namespace = parser.parse_args(args)
    except Exception as e:  # jsonargparse's ArgumentError (and YAML errors) name the key
        raise ConfigError(str(e).strip()) from e
    return build(cls, parser, namespace)


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain data (YAML-safe)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
