"""Small helpers shared by the SLAM modules: worker count, progress bars, the one-thread BLAS limit,
the numba compilation of the optional solvers."""

from __future__ import annotations

import functools
import sys

import threadpoolctl
from joblib import effective_n_jobs


def _progress(it, enabled, desc, **kw):
    """``it`` wrapped in a tqdm progress bar when ``enabled``, else ``it`` itself."""
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, desc=desc, **kw)


def _n_workers(n_jobs) -> int:
    """Worker threads for ``n_jobs``, as scikit-learn/joblib count them (None: 1; -1: all CPUs; -2: all but one).

    Raises
    ------
    ValueError
        ``n_jobs == 0``.
    """
    if n_jobs == 0:
        raise ValueError("n_jobs=0: use None or 1 (one thread), -1 (all CPUs) or a positive count")
    return max(int(effective_n_jobs(n_jobs)), 1)


def _blas_controller() -> threadpoolctl.ThreadpoolController:
    """threadpoolctl's controller of the loaded BLAS/OpenMP libraries, scanned again only after imports.

    ``threadpoolctl.get_cached_controller`` where threadpoolctl has it, else the same rule here:
    a new scan when the number of imported modules has changed (a new library may have come in).
    """
    cached = getattr(threadpoolctl, "get_cached_controller", None)
    return cached() if cached is not None else _controller_for(len(sys.modules))


@functools.lru_cache(maxsize=1)
def _controller_for(n_modules: int) -> threadpoolctl.ThreadpoolController:
    """A controller made when ``n_modules`` modules were imported (the cache key)."""
    return threadpoolctl.ThreadpoolController()


def one_blas_thread():
    """Context manager limiting BLAS to one thread, as ``threadpool_limits(limits=1, user_api="blas")``.

    The same limit without a scan of the process's loaded libraries on every call: that scan
    took 4-5 ms, a fifth of the CPU time of labelling 20 spectra with a 150-pixel model.

    Returns
    -------
    A context manager; the limit is set when it is created and restored on exit.
    """
    return _blas_controller().limit(limits=1, user_api="blas")


def numba_compile(option: str, namespace: dict, helpers: tuple[str, ...], driver: str):
    """``namespace[driver]`` compiled by numba (``nogil``, cached on disk), its ``helpers`` compiled first.

    The helpers are replaced in ``namespace`` (the module's globals) by their compiled
    versions, so that the compiled driver calls compiled code.  Without numba: an
    ImportError of one line naming ``option`` (e.g. ``"solver='smo'"``) and the solver
    that needs nothing more.
    """
    try:
        import numba
    except ImportError as exc:
        raise ImportError(f"SLAM({option}) needs numba (pip install 'mdslam[scale]'); "
                          "solver='admm' runs without it") from exc
    jit = numba.njit(nogil=True, cache=True)
    for name in helpers:
        if not hasattr(namespace[name], "py_func"):
            namespace[name] = jit(namespace[name])
    return jit(namespace[driver])
