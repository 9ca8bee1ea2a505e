"""The one seeded draw of at most ``n_max`` rows that every chapter, track and archive query uses.

Chapters and training sets accept ``n_max`` (quick runs) and ``seed``; the rows
they keep come from :func:`draw`, so the same ``(n, n_max, seed)`` selects the
same rows wherever it is asked.
"""

from __future__ import annotations

import numpy as np

__all__ = ["draw"]


def draw(n: int, n_max: int | None, seed: int | None = 0) -> np.ndarray:
    """Sorted indices of at most ``n_max`` of ``n`` rows, drawn without replacement (seeded).

    Parameters
    ----------
    n : int
        Number of rows available (>= 0).
    n_max : int or None
        Cap on the number of rows; ``None`` or ``n_max >= n`` keeps all rows.
    seed : int or None
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    ndarray of int, shape (min(n, n_max),)
        Row indices in increasing order (``arange(n)`` when no draw is needed).
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n_max is None or int(n_max) >= n:
        return np.arange(n)
    if int(n_max) < 0:
        raise ValueError(f"n_max must be >= 0 or None, got {n_max}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, int(n_max), replace=False))
