"""Variant strings: ``METHOD:SCHEME[+OPTION…]``, parsed in exactly one place.

An option is ``name`` (a flag) or ``name=value``. ``rtn:w4g64``,
``gptq:w4g64+act+damp=0.02``, ``qat:w3g64+steps=200``. The method decides
which schemes and options it accepts; an unknown method or option lists the
registered ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lowbit.errors import LowbitError


@dataclass(frozen=True)
class OptionSpec:
    """One option a method accepts.

    Attributes:
        name: option name as written after ``+``.
        kind: ``bool`` (a flag), ``int``, ``float`` or ``str``.
        default: value when the option is absent.
        help: one line for ``--help`` and error messages.
        choices: allowed values for ``str`` options (empty: any).
        bare: value of a non-flag option written without ``=value`` (None: a value is required).
    """

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    bare: Any = None

    def convert(self, raw: str | None, method: str) -> Any:
        """Typed value of ``+name`` / ``+name=raw``."""
        if raw is None and self.bare is not None and self.kind is not bool:
            return self.bare
        if self.kind is bool:
            if raw is None:
                return True
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise LowbitError(f"option '{self.name}' of {method} is a flag; got '={raw}'")
        if raw is None:
            raise LowbitError(f"option '{self.name}' of {method} needs a value: +{self.name}=<{self.kind.__name__}>")
        try:
            value = self.kind(raw)
        except ValueError:
            raise LowbitError(f"option '{self.name}' of {method} expects {self.kind.__name__}, got '{raw}'") from None
        if self.choices and value not in self.choices:
            raise LowbitError(f"option '{self.name}' of {method} must be one of {', '.join(self.choices)}, got '{raw}'")
        return value


@dataclass(frozen=True)
class VariantString:
    """The syntactic parts of a variant string, before the method validates them."""

    method: str
    scheme: str
    options: tuple[tuple[str, str | None], ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> VariantString:
        """Split ``METHOD:SCHEME[+OPTION…]``; raises :class:`LowbitError` on bad syntax."""
        text = text.strip()
        if not text:
            raise LowbitError("empty variant string; expected METHOD:SCHEME[+OPTION…], e.g. rtn:w4g64")
        head, *opts = text.split("+")
        if ":" not in head:
            raise LowbitError(f"variant '{text}' has no ':'; expected METHOD:SCHEME[+OPTION…], e.g. rtn:w4g64")
        method, scheme = (p.strip() for p in head.split(":", 1))
        if not method or not scheme:
            raise LowbitError(f"variant '{text}': method and scheme must both be given (METHOD:SCHEME)")
        parsed: list[tuple[str, str | None]] = []
        for opt in opts:
            if not opt.strip():
                raise LowbitError(f"variant '{text}' has an empty option (two '+' in a row or a trailing '+')")
            name, eq, value = opt.partition("=")
            if eq and not value:
                raise LowbitError(f"variant '{text}': option '{name}' has '=' but no value")
            parsed.append((name.strip().lower(), value.strip() if eq else None))
        return cls(method.lower(), scheme, tuple(parsed))

    def __str__(self) -> str:
        opts = "".join(f"+{n}" if v is None else f"+{n}={v}" for n, v in self.options)
        return f"{self.method}:{self.scheme}{opts}"


def split_variant_list(text: str) -> list[str]:
    """``--variants a,b,c`` → ``[a, b, c]`` (empty items refused)."""
    items = [v.strip() for v in text.split(",")]
    if any(not v for v in items):
        raise LowbitError(f"--variants '{text}' has an empty item")
    return items
