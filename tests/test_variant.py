import pytest

from lowbit.errors import LowbitError
from lowbit.methods import resolve_variant
from lowbit.variant import VariantString, split_variant_list


def test_parse_parts_and_options() -> None:
    v = VariantString.parse("GPTQ:w4g64+act+damp=0.02")
    assert (v.method, v.scheme) == ("gptq", "w4g64")
    assert v.options == (("act", None), ("damp", "0.02"))
    assert str(v) == "gptq:w4g64+act+damp=0.02"


@pytest.mark.parametrize("text", ["", "w4g64", "rtn:", ":w4g64", "rtn:w4g64+", "rtn:w4g64++x", "rtn:w4g64+damp="])
def test_syntax_errors_are_clear(text: str) -> None:
    with pytest.raises(LowbitError):
        VariantString.parse(text)


def test_unknown_method_lists_registered() -> None:
    with pytest.raises(LowbitError, match="registered: .*rtn"):
        resolve_variant("nosuch:w4g64")


def test_unknown_option_lists_options() -> None:
    with pytest.raises(LowbitError, match="options: lm_head"):
        resolve_variant("rtn:w4g64+bogus")


def test_typed_options() -> None:
    assert resolve_variant("rtn:w4g64+lm_head").options["lm_head"] is True
    assert resolve_variant("rtn:w4g64+lm_head=false").options["lm_head"] is False
    with pytest.raises(LowbitError, match="flag"):
        resolve_variant("rtn:w4g64+lm_head=maybe")


def test_bad_scheme_in_variant() -> None:
    with pytest.raises(LowbitError, match="bits must be 2–8"):
        resolve_variant("rtn:w9g64")
    with pytest.raises(LowbitError, match="group size"):
        resolve_variant("rtn:w4g0")


def test_variant_list() -> None:
    assert split_variant_list("rtn:w8ch, rtn:w4g64") == ["rtn:w8ch", "rtn:w4g64"]
    with pytest.raises(LowbitError, match="empty item"):
        split_variant_list("rtn:w8ch,,rtn:w4g64")
