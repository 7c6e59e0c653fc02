"""Text sources: a user's file, folder or JSONL, or a built-in corpus.

Everything becomes a list of *documents* (strings). Documents are the unit of
the calibration/evaluation split, so a source that is one big file is cut into
paragraph-aligned documents first.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

from lowbit.errors import LowbitError

BUILTINS = ("builtin:python-docs", "builtin:python-code")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
#: Paragraphs are merged into documents of at least this many characters, so a
#: single text file still splits into many independent documents.
MIN_DOC_CHARS = 2000


def _python_docs() -> list[str]:
    # English prose: the help topics shipped with CPython (pydoc_data).
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _python_code() -> list[str]:
    # Code: the standard library's top-level modules, one document per file.
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))]


def split_paragraph_documents(text: str, min_chars: int = MIN_DOC_CHARS) -> list[str]:
    """Cut one long text at blank lines into documents of ≥ ``min_chars`` characters."""
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for para in text.split("\n\n"):
        if not para.strip():
            continue
        current.append(para)
        size += len(para)
        if size >= min_chars:
            docs.append("\n\n".join(current))
            current, size = [], 0
    if current:
        docs.append("\n\n".join(current))
    return docs


def _read_jsonl(path: Path, text_field: str) -> list[str]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LowbitError(f"{path}:{lineno} is not valid JSON: {e.msg}") from e
            if not isinstance(row, dict) or text_field not in row:
                raise LowbitError(f"{path}:{lineno} has no field '{text_field}' (set it with --text-field)")
            value = row[text_field]
            if not isinstance(value, str):
                raise LowbitError(f"{path}:{lineno} field '{text_field}' is not a string")
            if value.strip():
                docs.append(value)
    return docs


def load_documents(spec: str, text_field: str = "text") -> list[str]:
    """Documents of the source ``spec``: a built-in name, a .jsonl file, a text file or a folder."""
    if spec == "builtin:python-docs":
        return _python_docs()
    if spec == "builtin:python-code":
        return _python_code()
    if spec.startswith("builtin:"):
        raise LowbitError(f"unknown built-in text '{spec}'; available: {', '.join(BUILTINS)}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise LowbitError(f"text source '{spec}' not found (expected a file, a folder or one of {', '.join(BUILTINS)})")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + (".jsonl",))
        if not files:
            raise LowbitError(f"folder {path} has no text files ({', '.join(TEXT_SUFFIXES)}, .jsonl)")
        docs: list[str] = []
        for f in files:
            docs += _read_jsonl(f, text_field) if f.suffix.lower() == ".jsonl" else [f.read_text(encoding="utf-8", errors="replace")]
        docs = [d for d in docs if d.strip()]
    elif path.suffix.lower() == ".jsonl":
        docs = _read_jsonl(path, text_field)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise LowbitError(f"{path} is not UTF-8 text: {e}") from e
        docs = split_paragraph_documents(text)
    if not docs:
        raise LowbitError(f"text source '{spec}' is empty")
    return docs
