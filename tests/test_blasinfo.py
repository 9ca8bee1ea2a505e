"""mdslam.blasinfo: the CPU's flags, the BLAS kernels in use, and the hint where AVX-512 goes unused."""

import numpy as np  # noqa: F401  (loads numpy's BLAS before threadpoolctl looks)

from mdslam import blasinfo, cli

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16
bogomips\t: 5192.24

processor\t: 1
flags\t\t: fpu sse
"""

OPENBLAS_HASWELL = {"user_api": "blas", "internal_api": "openblas", "version": "0.3.31", "architecture": "Haswell"}
AVX512 = blasinfo.SKYLAKEX_FLAGS | {"avx2", "fma"}


def test_cpu_flags_are_the_first_processors():
    flags = blasinfo.cpu_flags(CPUINFO)
    assert {"avx2", "avx512f", "avx512vl", "avx512_bf16"} <= flags
    assert len(flags) == 12                                   # counted by hand in CPUINFO's first flags line
    assert blasinfo.cpu_flags("processor\t: 0\nmodel name\t: x\n") == frozenset()


def test_cpu_model_names_the_first_processor():
    assert blasinfo.cpu_model(CPUINFO) == "AMD EPYC (family 26)"
    assert blasinfo.cpu_model("processor\t: 0\nmodel name\t: Some CPU\n") == "Some CPU"


def test_hint_when_an_avx2_pin_hides_avx512():
    hint = blasinfo.coretype_hint([OPENBLAS_HASWELL], AVX512, {"OPENBLAS_CORETYPE": "Haswell"})
    assert "Haswell (AVX2)" in hint and "OPENBLAS_CORETYPE=Haswell is set" in hint and "OPENBLAS_L2_SIZE" in hint
    hint = blasinfo.coretype_hint([OPENBLAS_HASWELL], AVX512, {})
    assert "OPENBLAS_CORETYPE=SkylakeX" in hint and "is set" not in hint


def test_no_hint_where_it_does_not_apply():
    skx = dict(OPENBLAS_HASWELL, architecture="SkylakeX")
    mkl = {"user_api": "blas", "internal_api": "mkl", "version": "2024", "architecture": None}
    assert blasinfo.coretype_hint([skx], AVX512, {}) is None                        # already AVX-512
    assert blasinfo.coretype_hint([mkl], AVX512, {}) is None                        # not OpenBLAS
    assert blasinfo.coretype_hint([OPENBLAS_HASWELL], AVX512 - {"avx512bw"}, {}) is None   # no full AVX-512
    assert blasinfo.coretype_hint([OPENBLAS_HASWELL], {"avx2"}, {"OPENBLAS_CORETYPE": "Haswell"}) is None
    assert blasinfo.coretype_hint([], AVX512, {}) is None


def test_blas_libraries_of_this_process():
    libs = blasinfo.blas_libraries()
    assert libs and all(d["user_api"] == "blas" for d in libs)


def test_cli_prints_the_hint_on_stderr(monkeypatch, capsys):
    monkeypatch.setattr(blasinfo, "coretype_hint", lambda: "OpenBLAS x runs its Haswell (AVX2) kernels")
    cli._blas_note()
    assert capsys.readouterr().err == "note: OpenBLAS x runs its Haswell (AVX2) kernels\n"
    monkeypatch.setattr(blasinfo, "coretype_hint", lambda: None)
    cli._blas_note()
    assert capsys.readouterr().err == ""
