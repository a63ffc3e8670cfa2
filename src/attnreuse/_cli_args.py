"""Argument types shared by the tools' command lines."""

from __future__ import annotations

import argparse
import ast
import dataclasses
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
        merged = dict(getattr(namespace, self.dest, None) or {})
        for item in values:
            merged.update(item)
        setattr(namespace, self.dest, merged)


def csv_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated names such as 'eager,ort' (blanks dropped); at least one (an
    empty value would otherwise read as the flag not given, and run its default unasked)."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected one or more comma-separated values, got {text!r}")
    return names


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated ints such as '224,384'."""
    try:
        return tuple(int(part) for part in csv_list(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from err


def arg(default=dataclasses.MISSING, help: str = "", *, default_factory=dataclasses.MISSING, flags: tuple[str, ...] = (),
        positional: bool = False, choices: tuple | None = None, cli: bool = True, nargs: str | None = None,
        metavar: str | None = None):
    """A config dataclass field with its command line: `help`, the option strings (`flags`,
    default --field-name), a positional argument, `choices`; `cli=False` keeps it off the command line.
    A tuple field takes comma-separated values, or with `nargs` ("+", "*") space-separated ones
    (`choices` then apply to each); `metavar` names the value in the help."""
    metadata = {"help": help, "flags": tuple(flags), "positional": positional, "choices": choices, "cli": cli,
                "nargs": nargs, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict,
          "tuple[str, ...]": csv_list, "tuple[int, ...]": int_list}  # fmt: skip
# the type of one item of a tuple field that takes space-separated values (`arg(nargs=...)`)
_ITEM_TYPES = {csv_list: str, int_list: int}


def _field_type(f: dataclasses.Field):
    """(argparse type, is a tuple) of a field from its annotation (a string under postponed
    annotations); `X | None` is X. None where the annotation is not one of these."""
    text = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    text = text.replace(" ", "").replace(",...", ", ...")
    if text.endswith("|None"):
        text = text[: -len("|None")]
    kind = _TYPES.get(text)
    return kind, text.startswith("tuple[")


def _shown(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return "required"
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(value, tuple):
        return "default: " + ((" " if f.metadata.get("nargs") else ",").join(map(str, value)) or "none")
    return f"default: {value}"


def _flag(f: dataclasses.Field) -> str:
    """A field's first option string (the one its messages name)."""
    return (f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))[0]


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--flag` per field of the frozen dataclass `cls` (type from its annotation, default and
    help from the field: see `arg`), plus `--config FILE` (a saved config JSON). Read them back with
    `config_from_args`: defaults < the config file < flags given on the command line. A dict field
    takes `key=value ...` or one JSON object; a tuple field comma-separated values; a bool field
    `--flag` / `--no-flag`."""
    parser.add_argument("--config", metavar="FILE", help=f"a saved {cls.__name__} JSON (flags given here override it)")
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not f.init or meta.get("cli") is False:
            continue
        kind, _ = _field_type(f)
        if kind is None:
            default = f.default
            kind = type(default) if default is not None and default is not dataclasses.MISSING else str
        nargs = meta.get("nargs")
        if nargs is not None:
            kind = _ITEM_TYPES.get(kind, kind)
        help_text = f"{meta.get('help', '')} ({_shown(f)})".strip()
        extra = {key: meta[key] for key in ("choices", "nargs", "metavar") if meta.get(key)}
        if meta.get("positional"):
            extra.setdefault("nargs", "?")
            parser.add_argument(f.name, type=kind, default=argparse.SUPPRESS, help=help_text, **extra)
            continue
        flags = meta.get("flags") or ("--" + f.name.replace("_", "-"),)
        common = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
        elif kind is dict:
            parser.add_argument(*flags, type=kwargs_item, nargs="+", action=MergeKwargs, metavar="KEY=VALUE", **common)
        else:
            parser.add_argument(*flags, type=kind, **common, **extra)


def config_from_args(cls: type, args: argparse.Namespace, **fixed):
    """The `cls` instance `add_config_args` describes: its defaults, then `--config FILE`, then
    the flags on the command line, then `fixed`. A required field given nowhere is a ValueError naming its flag."""
    from pathlib import Path

    values: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if path.is_dir():
            raise IsADirectoryError(f"--config {path} is a directory; give a saved {cls.__name__} JSON file")
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:  # a binary file named neither flag nor file
            raise ValueError(f"--config {path}: not valid JSON ({err})") from None
        if not isinstance(saved, dict):
            raise ValueError(f"--config {path}: holds a JSON {type(saved).__name__}, not a saved {cls.__name__} object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - names)
        if unknown:
            raise ValueError(f"--config {path}: unknown {cls.__name__} fields {unknown}")
        values.update(saved)
    for f in dataclasses.fields(cls):
        # a field off the command line is not read from `args`, whose names may mean something else
        # (`args.command` is the tool's name)
        if f.metadata.get("cli") is not False and hasattr(args, f.name):
            values[f.name] = getattr(args, f.name)
    values.update(fixed)
    for f in dataclasses.fields(cls):
        if isinstance(values.get(f.name), list) and _field_type(f)[1]:
            values[f.name] = tuple(values[f.name])  # JSON has no tuples
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in values:
            flag = f.name.upper() if f.metadata.get("positional") else _flag(f)
            raise ValueError(f"{flag} is required (on the command line or in a --config FILE)")
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:
        raise type(err)(flag_spelling(cls, str(err))) from None


def flag_spelling(cls: type, message: str) -> str:
    """`message` with a leading field name of `cls` spelled as its flag ("fit_steps must be ..." ->
    "--fit-steps must be ..."): a config names its fields, a command-line user typed flags.
    Positional fields, fields without a flag and messages that open otherwise are left as they are."""
    head, sep, rest = message.partition(" ")
    for f in dataclasses.fields(cls):
        if f.name == head and sep and f.metadata.get("cli") is not False and not f.metadata.get("positional"):
            return f"{_flag(f)} {rest}"
    return message


def config_argv(config) -> list[str]:
    """The command-line arguments that `add_config_args` / `config_from_args` read back as `config`
    (a config dataclass instance): one flag for every field whose value differs from the field's
    default, in field order (a positional field first, as its value). So a command built from a
    config cannot restate a default, and reads back the config that built it.

    A field the command line cannot carry is a ValueError naming it: `cli=False` or None in place
    of a default that is not None (a flag has no spelling for None).
    """
    positional, flags = [], []
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value == default and type(value) is type(default):
            continue
        if f.metadata.get("cli") is False:
            raise ValueError(f"{type(config).__name__}.{f.name}={value!r} has no command-line flag")
        if value is None:
            raise ValueError(f"{type(config).__name__}.{f.name}=None cannot be written as {_flag(f)} "
                             f"(its default is {default!r})")
        spread = isinstance(value, tuple) and f.metadata.get("nargs")  # space-separated values
        if f.metadata.get("positional"):
            positional += list(map(str, value)) if spread else [str(value)]
        elif spread:
            flags += [_flag(f), *map(str, value)]
        elif isinstance(value, bool):
            flags.append(_flag(f) if value else "--no-" + _flag(f)[2:])
        elif isinstance(value, dict):
            flags += [_flag(f), json.dumps(value, sort_keys=True)]
        elif isinstance(value, tuple):
            flags += [_flag(f), ",".join(map(str, value))]
        else:
            flags += [_flag(f), str(value)]
    return positional + flags


def command_line(words: tuple[str, ...], config) -> str:
    """The shell command `words + flags` that repeats `config` (a config dataclass instance): its
    settings away from the defaults, as `config_argv` writes them; a `command` field (where a run
    records its own command line) is left out."""
    import shlex

    if any(f.name == "command" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, command=None)
    return shlex.join([*words, *config_argv(config)])


def distinct_outputs(config, names: tuple[str, ...]) -> None:
    """A ValueError when two of the output fields `names` of `config` (flags --NAME) name one file:
    the one written last would silently replace the other."""
    from pathlib import Path

    seen: dict[Path, str] = {}
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        path = Path(value).resolve()
        if path in seen:
            raise ValueError(f"--{seen[path]} and --{name} both name {value}; give each output its own file")
        seen[path] = name


def add_quick_flag(parser: argparse.ArgumentParser, preset: dict, what: str) -> None:
    """`--quick`: the preset `preset` (field -> value), described in the help after `what`; the
    flags given with it override it (`quick_preset`)."""
    text = ", ".join(f"{k}={' '.join(map(str, v)) if isinstance(v, (tuple, list)) else v}" for k, v in preset.items())
    parser.add_argument("--quick", action="store_true", help=f"{what}: {text}; flags given override them")


def quick_preset(args: argparse.Namespace, preset: dict) -> dict:
    """The fields of `preset` that `--quick` sets in `args`' run: none without --quick, and never
    one whose flag was given (a flag the user typed is not silently dropped)."""
    if not getattr(args, "quick", False):
        return {}
    return {k: v for k, v in preset.items() if not hasattr(args, k)}
