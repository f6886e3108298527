"""CPU features and what gpt4tools picks from them, on this machine and as an AVX2-only one."""

import pytest

from gpt4tools import hardware

SAPPHIRE_RAPIDS = """processor\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f avx512bw avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8
processor\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f avx512bw avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8
"""


def test_flags_as_an_avx2_cpu_leave_out_avx512_and_amx():
    assert {"amx_bf16", "avx512_bf16", "avx512f"} <= hardware.flags_of(SAPPHIRE_RAPIDS)
    assert hardware.flags_of(SAPPHIRE_RAPIDS, "AVX2 ") == {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}
    with pytest.raises(ValueError, match="avx2"):
        hardware.flags_of(SAPPHIRE_RAPIDS, "avx512")
    assert hardware.flags_of("no flags line here") == set()


@pytest.fixture
def as_avx2(monkeypatch):
    monkeypatch.setenv(hardware.ISA_ENV, "avx2")
    hardware._cpu_flags.cache_clear()
    yield
    monkeypatch.delenv(hardware.ISA_ENV)
    hardware._cpu_flags.cache_clear()


@pytest.mark.skipif(hardware._cpu_flags() is None, reason="reads /proc/cpuinfo (Linux)")
def test_an_avx2_cpu_gets_fp32_torch_a_q8_gguf_and_llamacpp_for_the_benchmark(as_avx2):
    import torch

    from gpt4tools import llm
    from gpt4tools.llm.llamacpp import resolve_form

    real = hardware.flags_of(open("/proc/cpuinfo", encoding="ascii", errors="ignore").read())
    assert hardware._cpu_flags() == {f for f in real if not f.startswith(("avx512", "amx", "avx_vnni"))}
    assert not hardware.cpu_has_amx() and not hardware.cpu_has_fast_bf16()
    assert hardware.resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_form("auto") == "q8_0"
    assert llm.pick_runner("auto", "default", "cpu", None) == ("llamacpp", 1)
