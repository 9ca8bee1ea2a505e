"""Shared test fixtures: the offline data mirror.

The real data live outside the repository, in the mirror named by
``MDSLAM_DATA_MIRROR``. When that variable is unset, the session points it
at the sibling ``../shared/data`` of the checkout (the layout of the CI
machines). Tests that need real files take the ``data_mirror`` fixture,
which skips them, with the reason, when no mirror is present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MIRROR_ENV = "MDSLAM_DATA_MIRROR"
DEFAULT_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _mirror_env():
    """Set ``MDSLAM_DATA_MIRROR`` to ``../shared/data`` for the session if it is unset."""
    if os.environ.get(MIRROR_ENV):
        yield Path(os.environ[MIRROR_ENV]).expanduser()
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MIRROR_ENV, str(DEFAULT_MIRROR))
        yield DEFAULT_MIRROR


@pytest.fixture(scope="session")
def data_mirror(_mirror_env) -> Path:
    """The offline mirror directory; skips the test when it is absent."""
    path = Path(_mirror_env)
    if not path.is_dir():
        pytest.skip(
            f"offline data mirror not found at {path}: set {MIRROR_ENV} to a copy of the "
            "project's data mirror (see the data README) to run tests on real data"
        )
    return path


@pytest.fixture(scope="module")
def load(data_mirror):
    """Load registry datasets from the offline mirror (skips without it), once per test module."""
    from mdslam import datasets

    cache: dict = {}

    def _load(name: str):
        if name not in cache:
            cache[name] = datasets.load(name)
        return cache[name]

    return _load


def _decay(theta, x):
    """f = a exp(-b x) + c and its Jacobian, for (k, 3) parameter rows (a small non-linear LM test problem)."""
    import numpy as np

    a, b, c = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    e = np.exp(-b * x[None, :])
    return a * e + c, np.stack([e, -a * x[None, :] * e, np.ones_like(e)], axis=-1)


def _decay_problem(seed: int, m: int, n: int):
    """m seeded decay problems on n points: x (n,), truth (m, 3), sigma (m, n), y (m, n), w = 1/sigma^2."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, n)
    truth = np.column_stack([rng.uniform(1, 3, m), rng.uniform(0.3, 2, m), rng.uniform(-0.5, 0.5, m)])
    sigma = rng.uniform(0.02, 0.1, (m, n))
    y = _decay(truth, x)[0] + rng.normal(0, 1, (m, n)) * sigma
    return x, truth, sigma, y, 1.0 / sigma**2


@pytest.fixture
def decay():
    """The decay model ``decay.model(theta, x) -> (f, J)`` and ``decay.problem(seed, m, n)``."""
    from types import SimpleNamespace

    return SimpleNamespace(model=_decay, problem=_decay_problem)
