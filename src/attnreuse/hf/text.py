"""Text for analysis, distillation and fidelity: a user's file, or a built-in real-English corpus.

The built-in corpus is the docstrings of Python's own standard library (on every machine with
Python, no download): the first paragraph of every module, class and function docstring of at
least `MIN_WORDS` words, whitespace collapsed, duplicates dropped, in sorted file order. A text
belongs to the held-out split when crc32(text) % 10 == 0 (a fixed split that does not depend on the
corpus's order or size). The corpus follows the Python version (3.11's differs a little from 3.12's).
"""

from __future__ import annotations

import ast
import functools
import os
import sysconfig
import zlib
from collections import deque
from pathlib import Path

__all__ = ["BUILTIN", "load_texts", "split", "stdlib_docstrings"]

BUILTIN = "stdlib"
MIN_WORDS = 8
MAX_CHARS = 2000
_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__", "turtledemo"}


def stdlib_docstrings(limit: int | None = None) -> list[str]:
    """The built-in corpus (module doc), at most `limit` texts. Parsing the standard library takes
    seconds, so a process parses it once (`_parsed`) and each call gets its own list."""
    return list(_parsed(limit))


@functools.lru_cache(maxsize=4)
def _parsed(limit: int | None) -> tuple[str, ...]:
    return tuple(_walk(limit))


def _walk(limit: int | None) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    seen, texts = set(), []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(dirpath, name).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in _statements(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                text = " ".join(doc.split("\n\n")[0].split())[:MAX_CHARS]
                if len(text.split()) >= MIN_WORDS and text not in seen:
                    seen.add(text)
                    texts.append(text)
                    if limit is not None and len(texts) >= limit:
                        return texts
    return texts


_BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)  # the only nodes a def or class can sit under


def _statements(tree: ast.AST):
    """`ast.walk(tree)` (breadth first) without expressions and their subtrees, which hold no
    docstring: the same nodes that carry one in the same order (the corpus: 9.0 -> 7.5 s, most of
    the rest is parsing)."""
    todo = deque([tree])
    while todo:
        node = todo.popleft()
        todo.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, _BLOCKS))
        yield node


def load_texts(source: str = BUILTIN) -> list[str]:
    """`source`: "stdlib" (built-in) or a UTF-8 file with one text per line (blank lines skipped)."""
    if source == BUILTIN:
        return stdlib_docstrings()
    path = Path(source)
    if path.is_dir():
        raise IsADirectoryError(f"--text {source} is a directory; give a UTF-8 file with one text per line, or 'stdlib'")
    if not path.is_file():
        raise FileNotFoundError(f"--text {source}: no such file (give a UTF-8 file with one text per line, or 'stdlib')")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"--text {source}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise ValueError(f"--text {source}: no non-blank lines; give one text per line")
    return texts


def split(texts: list[str]) -> tuple[list[str], list[str]]:
    """(train, held_out): held-out when crc32(text) % 10 == 0."""
    held = [t for t in texts if zlib.crc32(t.encode()) % 10 == 0]
    train = [t for t in texts if zlib.crc32(t.encode()) % 10 != 0]
    return train, held
