"""Small helpers shared by the SLAM modules: worker count and progress bars."""

from __future__ import annotations

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
