"""The tracks' training sets on the real data of the mirror."""

import numpy as np
import pytest

from mdslam import tracks


def test_xp_track_is_the_real_m_dwarfs_with_labels(data_mirror):
    ts = tracks.xp_mdwarfs()
    flow = dict(zip(ts.cut_flow["cut"], ts.cut_flow["n_kept"], strict=True))
    assert flow["gaiaxp_apogee"] == 40226
    assert flow["teff < 4000 and logg > 4"] == 736  # the 736 M dwarfs of the data README
    assert len(ts) == ts.spectra.n_spec == flow["Li 2021 label cuts"]
    assert ts.spectra.n_pix == 343
    assert (ts.labels["teff"] < 4000).all() and (ts.labels["logg"] > 4).all()
    assert np.isfinite(ts.y).all() and (ts.snr > 30).all()
    assert len(np.unique(ts.labels["id"])) == len(ts)  # one row per Gaia source


def test_xp_track_n_max_is_seeded(data_mirror):
    a = tracks.xp_mdwarfs(n_max=50, seed=1)
    b = tracks.xp_mdwarfs(n_max=50, seed=1)
    c = tracks.xp_mdwarfs(n_max=50, seed=2)
    assert len(a) == 50
    assert list(a.labels["id"]) == list(b.labels["id"]) != list(c.labels["id"])


def test_lamost_track_is_normalised_on_the_common_grid(data_mirror):
    ts = tracks.lamost_dr7()
    assert len(ts) == 54
    assert ts.spectra.n_pix == 1596
    w = ts.spectra.wavelength
    assert w[0] == pytest.approx(6147, abs=0.01) and w[-1] == pytest.approx(8888, abs=0.01)
    assert 0.9 < np.nanmedian(ts.spectra.flux[:, (w > 8150) & (w < 8180)]) < 1.1
    assert set(ts.label_names) <= set(ts.labels.colnames)


def test_train_test_split_is_a_seeded_partition():
    tr, te = tracks.train_test_split(1120, test_fraction=250 / 1120, seed=3)
    assert len(te) == 250 and len(tr) == 870
    assert len(np.intersect1d(tr, te)) == 0 and len(np.union1d(tr, te)) == 1120
    tr2, _ = tracks.train_test_split(1120, test_fraction=250 / 1120, seed=3)
    assert (tr == tr2).all()
    with pytest.raises(ValueError):
        tracks.train_test_split(10, test_fraction=1.5)
