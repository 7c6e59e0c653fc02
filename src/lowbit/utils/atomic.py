"""Write outputs under a temporary name and rename them when complete.

An interrupted run then never leaves a file or folder that looks finished, and
an output path that names an input is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lowbit.errors import LowbitError


def check_output_path(out: Path, inputs: list[Path] | None = None, overwrite: bool = False) -> None:
    """Refuse an output that would overwrite an input, or an existing path without ``overwrite``."""
    out_r = out.resolve()
    for inp in inputs or []:
        inp_r = Path(inp).resolve()
        if out_r == inp_r or inp_r in out_r.parents or out_r in inp_r.parents:
            raise LowbitError(f"output {out} would overwrite the input {inp}; choose another path")
    if out.exists() and not overwrite:
        raise LowbitError(f"output {out} already exists; remove it or pass --overwrite")


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_dir(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; move it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary folder
        if path.exists():
            if not overwrite:
                raise LowbitError(f"output {path} appeared while writing; not replacing it")
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old) if path.is_dir() else path.unlink()
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
