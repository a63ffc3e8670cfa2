"""Argument types shared by the tools' command lines."""

from __future__ import annotations

import argparse
import ast
import json


def json_object(text: str) -> dict:
    """argparse type: a JSON object such as '{"attn_plan": "reuse"}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"depth\": 4}}', got {text!r}")
    return value


def kwargs_item(text: str) -> dict:
    """argparse type: one JSON object, or one `key=value` as timm's train.py takes them (the value
    read as a Python literal where it is one, else as a string: depth=4, attn_plan=reuse)."""
    if text.lstrip().startswith("{"):
        return json_object(text)
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value or a JSON object, got {text!r}")
    try:
        return {key: ast.literal_eval(value)}
    except (ValueError, SyntaxError):
        return {key: value}


class MergeKwargs(argparse.Action):
    """`--model-kwargs a=1 b=x` or `--model-kwargs '{"a": 1}'`: the items merged into one dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        merged = dict(getattr(namespace, self.dest) or {})
        for item in values:
            merged.update(item)
        setattr(namespace, self.dest, merged)


def csv_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated names such as 'eager,ort' (blanks dropped)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated ints such as '224,384'."""
    try:
        return tuple(int(part) for part in csv_list(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from err


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per field of the frozen dataclass `cls` (type and default from the field, help
    from its `metadata["help"]`), plus `--config FILE` (a saved config JSON). Read them back with
    `config_from_args`: defaults < the config file < flags given on the command line."""
    import dataclasses

    parser.add_argument("--config", metavar="FILE", help=f"a saved {cls.__name__} JSON (flags given here override it)")
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        default = f.default
        kind = type(default) if default is not None and default is not dataclasses.MISSING else str
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {default})".strip()
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def config_from_args(cls: type, args: argparse.Namespace, **fixed):
    """The `cls` instance `add_config_args` describes: its defaults, then `--config FILE`, then flags."""
    import dataclasses
    from pathlib import Path

    values: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--config {path}: not valid JSON ({err})") from None
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - names)
        if unknown:
            raise ValueError(f"--config {path}: unknown {cls.__name__} fields {unknown}")
        values.update(saved)
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    values.update(fixed)
    return cls(**values)
