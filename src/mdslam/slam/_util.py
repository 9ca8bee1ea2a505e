"""Small helpers shared by the SLAM modules: worker count and progress bars."""

from __future__ import annotations

import os


def _progress(it, enabled, desc, **kw):
    """``it`` wrapped in a tqdm progress bar when ``enabled``, else ``it`` itself."""
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, desc=desc, **kw)


def _n_workers(n_jobs) -> int:
    """Number of worker threads for ``n_jobs`` (None or 0: all CPUs of the process; -k: all but k-1)."""
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_jobs is None or n_jobs == 0:
        return max(ncpu, 1)
    if n_jobs < 0:
        return max(ncpu + 1 + int(n_jobs), 1)
    return int(n_jobs)
