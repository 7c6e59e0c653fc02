"""Schemes: the grids a weight may be quantized onto.

:func:`parse_scheme` turns the scheme part of a variant string (``w4g64``,
``int:w8ch``, later ``nf4`` or ``Q4_K``) into a :class:`Scheme`; every family
registers a parser here, so the CLI, the advisor and saved files resolve names
the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from lowbit.errors import LowbitError
from lowbit.schemes.base import QuantizedTensor, Scheme, check_finite
from lowbit.schemes.gguf.mixture import GGUFMixture
from lowbit.schemes.gguf.scheme import GGUFScheme
from lowbit.schemes.int_affine import IntScheme

SchemeParser = Callable[[str], "Scheme | None"]

#: family name → parser returning a scheme, or None when the text is not that family's syntax.
_FAMILIES: dict[str, SchemeParser] = {}


def register_family(name: str, parser: SchemeParser) -> None:
    """Register a scheme family's parser under ``name`` (the spec prefix)."""
    if name in _FAMILIES:
        raise ValueError(f"scheme family '{name}' registered twice")
    _FAMILIES[name] = parser


def scheme_families() -> list[str]:
    """Registered family names."""
    return sorted(_FAMILIES)


def parse_scheme(text: str) -> Scheme:
    """Resolve ``"w4g64"`` or ``"int:w4g64"`` (family prefix optional) to a scheme."""
    text = text.strip()
    if ":" in text:
        family, body = text.split(":", 1)
        if family not in _FAMILIES:
            raise LowbitError(f"unknown scheme family '{family}'; registered: {', '.join(scheme_families())}")
        found = _FAMILIES[family](body)
        if found is None:
            raise LowbitError(f"'{body}' is not a valid {family} scheme")
        return found
    for parser in _FAMILIES.values():
        found = parser(text)
        if found is not None:
            return found
    raise LowbitError(
        f"unknown scheme '{text}'; expected e.g. w4g64, w8ch, w8t, w4g128asym "
        f"(families: {', '.join(scheme_families())})"
    )


def get_scheme(spec: str) -> Scheme:
    """Rebuild a scheme from its canonical spec (as stored in a :class:`QuantizedTensor`)."""
    return parse_scheme(spec)


register_family("int", IntScheme.parse)
register_family("gguf", GGUFScheme.parse)
register_family("gguf-mix", GGUFMixture.parse)

__all__ = ["GGUFMixture", "GGUFScheme", "IntScheme", "QuantizedTensor", "Scheme", "check_finite", "get_scheme", "parse_scheme", "register_family"]
