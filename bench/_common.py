"""Shared by bench scripts: every result file records the command that produced it."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=RESULTS.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the command, machine and commit."""
    from lowbit.report.schema import dumps
    from lowbit.utils.machine import machine_info

    doc = {
        "bench": name,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "machine": machine_info(),
        **payload,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(dumps(doc))
    print(json.dumps({k: v for k, v in doc.items() if k != "report"}, indent=2)[:4000])
    return path


def best_of(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` (after one untimed warm-up call)."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
