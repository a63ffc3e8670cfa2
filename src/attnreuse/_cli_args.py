"""Argument types shared by the tools' command lines."""

from __future__ import annotations

import argparse
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


def csv_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated names such as 'eager,ort' (blanks dropped)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated ints such as '224,384'."""
    try:
        return tuple(int(part) for part in csv_list(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from err
