"""Errors that mean "the user asked for something we cannot do".

Everything raised as :class:`LowbitError` is reported by the CLI as one line and
exit code 2; anything else is a bug in lowbit and keeps its traceback.
"""

from __future__ import annotations


class LowbitError(Exception):
    """Bad input: a missing file, an unparsable variant, NaN weights, ...

    The message must name the offending file, tensor or option and say what was
    expected, because it is all the user sees.
    """


class MissingExtraError(LowbitError):
    """An optional runtime is needed but not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{package}': "
            f"pip install 'lowbit[{extra}]'"
        )
        self.package = package
        self.extra = extra
