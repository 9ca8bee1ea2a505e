"""The one seeded n_max draw."""

import numpy as np
import pytest

from mdslam import sampling
from mdslam.compendium import chapter


def test_draw_is_seeded_sorted_and_without_replacement():
    a = sampling.draw(100, 10, seed=1)
    assert len(a) == 10 and len(np.unique(a)) == 10 and (np.diff(a) > 0).all()
    assert (a == sampling.draw(100, 10, seed=1)).all() and not (a == sampling.draw(100, 10, seed=2)).all()
    # the same rows as numpy's generator draws directly (the draw of every chapter before)
    ref = np.sort(np.random.default_rng(1).choice(100, 10, replace=False))
    assert (a == ref).all()
    assert (sampling.draw(5, None) == np.arange(5)).all() and (sampling.draw(5, 9) == np.arange(5)).all()
    with pytest.raises(ValueError, match="n_max"):
        sampling.draw(5, -1)


def test_chapter_subsample_uses_the_draw():
    t = np.arange(100) * 10
    assert (chapter.subsample(t, 7, 4) == t[sampling.draw(100, 7, 4)]).all()
