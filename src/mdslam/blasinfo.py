"""Which BLAS kernels this process runs, and whether OpenBLAS leaves a CPU's AVX-512 unused.

SLAM's training is float32 matrix products (the ADMM steps of :mod:`mdslam.svr`), so it runs
at the speed of the kernels OpenBLAS chose when numpy loaded it.  OpenBLAS picks them from the
CPU model unless ``OPENBLAS_CORETYPE`` names a family.  Some machines pin an AVX2 family
(``OPENBLAS_CORETYPE=Haswell``, often with ``OPENBLAS_L2_SIZE``) for the sake of older
OpenBLAS builds that crash or compute wrong results on a new CPU; numpy's current OpenBLAS
then leaves the CPU's AVX-512 unused.  On a 2-core AMD EPYC (Zen 5) with that pin, unsetting
both variables for mdslam's process alone made OpenBLAS 0.3.31 pick its SkylakeX (AVX-512)
kernels: a float32 product of SLAM's size ran 1.9x faster and ``SLAM.fit`` on the reference
problem took 1.47x less CPU (``benchmarks/README.md``, "OpenBLAS kernels on AVX-512 CPUs").

:func:`coretype_hint` says when a process runs AVX2 kernels on an AVX-512 CPU; ``mdslam train``
and ``mdslam train-grid`` print it.  Nothing here changes the environment: OpenBLAS reads it
once, when it is loaded, so the setting belongs to the command that starts Python (leave the
pin where other programs need it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import threadpoolctl

#: OpenBLAS kernel families that use AVX2 at most.
AVX2_CORES = frozenset({"haswell", "zen", "sandybridge"})

#: The AVX-512 subsets OpenBLAS's SkylakeX kernels use.
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})

#: What the AVX-512 kernels were measured to give (``benchmarks/README.md``), quoted by the hint.
_MEASURED = "with them SLAM.fit took 1.47x less CPU on an AMD EPYC Zen 5; see mdslam.blasinfo"


def _cpuinfo_fields(cpuinfo: str | None) -> dict[str, str]:
    """The ``key: value`` lines of the first CPU in ``/proc/cpuinfo`` (``cpuinfo``: its text; read
    from the file when None; empty where there is no such file)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return {}
    out: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if out:
                break                                 # a blank line ends the first CPU
            continue
        out.setdefault(key.strip(), value.strip())
    return out


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (Linux).

    Parameters
    ----------
    cpuinfo : str, optional
        The text of ``/proc/cpuinfo``; read from the file when None.

    Returns
    -------
    frozenset of str
        Empty where the file does not exist (macOS, Windows) or has no ``flags`` line.
    """
    return frozenset(_cpuinfo_fields(cpuinfo).get("flags", "").split())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The first CPU's model name and family from ``/proc/cpuinfo``, e.g. ``"AMD EPYC (family 26)"``
    (``platform.processor()`` where there is no such file), for the header of a benchmark."""
    import platform

    f = _cpuinfo_fields(cpuinfo)
    if not f:
        return platform.processor() or "unknown CPU"
    name = f.get("model name", "unknown CPU")
    return f"{name} (family {f['cpu family']})" if "cpu family" in f else name


def blas_libraries() -> list[dict]:
    """threadpoolctl's records of the BLAS libraries loaded in this process (``internal_api``,
    ``version``, ``architecture``, ``num_threads``, ``filepath``, ...)."""
    return [d for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]


def coretype_hint(libraries: Iterable[Mapping] | None = None, flags: Iterable[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> str | None:
    """A one-line hint when OpenBLAS runs AVX2 kernels on a CPU with AVX-512, else None.

    Parameters
    ----------
    libraries : iterable of mappings, optional
        BLAS records as :func:`blas_libraries` gives them (default: this process's).
    flags : iterable of str, optional
        The CPU's flags (default: :func:`cpu_flags`).
    environ : mapping, optional
        The environment (default: ``os.environ``): where ``OPENBLAS_CORETYPE`` pins the kernels,
        the hint says so.

    Returns
    -------
    str or None
        Names the library, its kernels and how to select the AVX-512 ones.
    """
    environ = os.environ if environ is None else environ
    libraries = blas_libraries() if libraries is None else libraries
    flags = cpu_flags() if flags is None else frozenset(flags)
    if not SKYLAKEX_FLAGS <= flags:
        return None
    for lib in libraries:
        arch = str(lib.get("architecture") or "")
        if lib.get("internal_api") != "openblas" or arch.lower() not in AVX2_CORES:
            continue
        head = f"OpenBLAS {lib.get('version', '')} runs its {arch} (AVX2) kernels on a CPU with AVX-512"
        pinned = environ.get("OPENBLAS_CORETYPE")
        if pinned:
            return (f"{head} because OPENBLAS_CORETYPE={pinned} is set: unset it (and OPENBLAS_L2_SIZE) for this "
                    f"command alone and OpenBLAS picks its AVX-512 kernels ({_MEASURED})")
        return (f"{head}: OPENBLAS_CORETYPE=SkylakeX, set before Python starts, selects its AVX-512 kernels "
                f"({_MEASURED})")
    return None
