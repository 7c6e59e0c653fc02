import json

import pytest

from lowbit.cli import main
from lowbit.errors import LowbitError
from lowbit.hardware import hw_report, support_table, target_fields
from lowbit.hardware.detect import MachineInfo, detect, isa_flags, normalize_arch
from lowbit.hardware.matrix import ACCELERATED, EMULATED, MATRIX, SCHEMES, UNSUPPORTED, scheme_key, support
from lowbit.hardware.targets import TARGETS, cpu_target, get_target
from lowbit.methods import resolve_variant

SPR_FLAGS = set("fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_int8".split())


def _status(scheme: str, target: str, runtime: str) -> str:
    return next(v.status for v in support(scheme, get_target(target)) if v.runtime == runtime)


def test_isa_flags_from_cpuinfo() -> None:
    isa = isa_flags("x86", SPR_FLAGS)
    assert isa["AVX2"] and isa["AVX-512"] and isa["AVX512-VNNI"] and isa["AMX-INT8"] and not isa["AVX512-FP16"]
    arm = isa_flags("arm", {"fp", "asimd", "asimddp"})
    assert arm["NEON"] and arm["dotprod"] and not arm["i8mm"]
    assert normalize_arch("x86_64") == "x86" and normalize_arch("arm64") == "arm"


def test_machine_maps_to_the_most_capable_cpu_target() -> None:
    def info(arch: str, flags: set[str]) -> MachineInfo:
        return MachineInfo("cpu", arch, isa_flags(arch, flags), 2, 8.0)

    assert cpu_target(info("x86", SPR_FLAGS)).name == "cpu-x86-amx"
    assert cpu_target(info("x86", {"avx2", "avx512f", "avx512_vnni"})).name == "cpu-x86-avx512vnni"
    assert cpu_target(info("x86", {"avx2"})).name == "cpu-x86-avx2"
    assert cpu_target(info("x86", set())).name == "cpu-x86-baseline"
    assert cpu_target(info("arm", {"asimd", "asimddp"})).name == "cpu-arm-dotprod"
    assert cpu_target(info("arm", {"asimd"})).name == "cpu-arm-neon"


def test_detect_here_is_well_formed() -> None:
    m = detect()
    assert m.cores >= 1 and m.ram_gb > 0 and m.cpu
    assert m.runtimes["torch"] is not None


def test_every_row_has_a_source_and_a_known_scheme_and_status() -> None:
    assert len(MATRIX) > 40
    for r in MATRIX:
        assert r.scheme in SCHEMES and r.status in (ACCELERATED, EMULATED, UNSUPPORTED) and r.source, r


def test_facts_the_matrix_must_state() -> None:
    assert _status("int4-w4a16", "cuda-sm80", "vLLM") == ACCELERATED
    assert "Marlin" in next(v.row.note for v in support("int4-w4a16", get_target("cuda-sm80")) if v.runtime == "vLLM")
    assert _status("fp8-w8a8", "cuda-sm90", "vLLM") == ACCELERATED
    assert _status("fp8-w8a8", "cuda-sm80", "vLLM") == EMULATED
    assert _status("fp8-w8a8", "cuda-sm75", "vLLM") == UNSUPPORTED
    assert _status("int8-w8a8", "cuda-sm75", "vLLM") == ACCELERATED
    assert _status("int8-w8a8", "cuda-sm70", "vLLM") == UNSUPPORTED
    assert _status("gguf", "apple-metal", "llama.cpp") == ACCELERATED
    assert _status("gguf", "cpu-arm-neon", "llama.cpp") == ACCELERATED
    assert _status("bnb-nf4", "cuda-sm80", "transformers + bitsandbytes") == ACCELERATED
    assert _status("bnb-nf4", "cpu-x86-avx2", "transformers + bitsandbytes") == EMULATED
    assert _status("int8-w8a8", "cpu-x86-avx512vnni", "torch int8 kernels") == ACCELERATED
    assert _status("int8-w8a8", "cpu-x86-avx512vnni", "ONNX Runtime") == ACCELERATED
    assert _status("int8-w8a8", "apple-metal", "vLLM") == UNSUPPORTED  # no row matches: no path listed


def test_variant_flags_on_a_target() -> None:
    w8a8 = resolve_variant("rtn:w8a8").scheme
    assert scheme_key(w8a8) == "int8-w8a8"
    assert target_fields(w8a8, get_target("cpu-x86-amx"))["no_accelerated_path"] is False
    on_metal = target_fields(w8a8, get_target("apple-metal"))
    assert on_metal["no_accelerated_path"] is True and on_metal["target_support"] == UNSUPPORTED
    int5 = resolve_variant("rtn:w5g64").scheme
    assert target_fields(int5, get_target("cuda-sm90"))["target_support"] == UNSUPPORTED
    assert target_fields(resolve_variant("rtn:w4g128").scheme, get_target("cuda-sm80"))["target_runtimes"][0] == "vLLM"


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(LowbitError, match="cpu-x86-avx512vnni.*apple-metal"):
        get_target("tpu-v5")
    assert get_target("cuda-sm87").sm == 87  # any capability by name
    assert set(TARGETS) >= {"cpu-x86-avx512vnni", "cpu-arm-neon", "cuda-sm80", "cuda-sm90", "apple-metal"}


def test_support_table_covers_every_scheme() -> None:
    table = support_table(get_target("cuda-sm90"))
    assert [row["scheme"] for row in table] == list(SCHEMES)


def test_cli_hw(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hw", "--json", "--target", "cuda-sm80"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["targets"][0]["name"] == "cuda-sm80" and report["machine"]["cores"] >= 1
    assert main(["hw", "--target", "nonsense"]) == 2
    assert "known targets" in capsys.readouterr().err
    assert main(["hw", "--sources"]) == 0
    out = capsys.readouterr().out
    assert "this machine" in out and "support on" in out and "onnxruntime.ai" in out


def test_report_names_the_int8_kernel() -> None:
    r = hw_report()
    assert r["int8_gemm_cpu"]["kernel"].startswith("torch._int_mm")
    assert r["targets"][0]["name"] == r["targets_here"][0]
