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
