"""The JSON document every advisor command writes: the compare schema's envelope, extended.

Top-level keys are those of :func:`lowbit.report.schema.build_report`
(``lowbit_version``, ``created``, ``command``, ``machine``, ``model``,
``eval``, ``calib``, ``reference``, ``results``); a command without a
measurement leaves ``eval``/``calib``/``reference`` null and ``results``
empty, and adds its own block (``recommendation``, ``auto``, ``calib_check``).
"""

from __future__ import annotations

import datetime as _dt
import shlex
import sys
from typing import Any

from lowbit import __version__
from lowbit.utils.machine import machine_info


def envelope(model: dict[str, Any] | None = None, **blocks: Any) -> dict[str, Any]:
    """A report document with no measurement, plus ``blocks``."""
    return {
        "lowbit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "lowbit " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "machine": machine_info(),
        "model": model,
        "eval": None,
        "calib": None,
        "reference": None,
        "results": [],
        **blocks,
    }
