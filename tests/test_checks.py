"""Input checks (mdslam.checks): each poison input of training or labelling gives a clear error or a counted exclusion."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.table import MaskedColumn

from mdslam import checks
from mdslam.checks import InputError


def _labels(n=40, seed=1):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(3000, 4000, n), rng.uniform(4.5, 5.0, n), rng.uniform(-1, 0.3, n)])


NAMES = ["teff", "logg", "fe_h"]


def test_plausible_range_is_found_by_any_spelling():
    assert checks.plausible_range("Teff") == (2000.0, 10000.0)
    assert checks.plausible_range("[Fe/H]") == (-5.0, 1.5)
    assert checks.plausible_range("M_H") == (-5.0, 1.5)
    assert checks.plausible_range("alpha_m") == (-1.0, 1.5)
    assert checks.plausible_range("vsini") is None


def test_sentinel_rows_are_excluded_with_a_counted_warning(caplog):
    y = _labels()
    y[[3, 7, 11], 2] = -9999.0
    y[5, 0] = np.nan
    with caplog.at_level(logging.WARNING, logger="mdslam"):
        keep = checks.check_training_labels(y, NAMES, source="lab.fits")
    assert keep.sum() == 36 and not keep[[3, 5, 7, 11]].any()
    text = caplog.text
    assert "3 of 40 row(s) holding a no-value code" in text and "1 of 40 row(s) without finite labels" in text


@pytest.mark.parametrize("col,value,expect", [
    (0, 1e9, "'teff' outside its plausible range 2000..10000"),
    (0, 3.3, "'teff' outside"),
    (1, 7.5, "'logg' outside"),
    (2, 2.0, "'fe_h' outside"),
])
def test_impossible_label_values_are_refused(col, value, expect):
    y = _labels()
    y[4, col] = value
    with pytest.raises(InputError, match=expect):
        checks.check_training_labels(y, NAMES, source="lab.fits")


def test_teff_in_thousands_with_unit_K_is_refused_with_a_hint():
    y = _labels()
    y[:, 0] /= 1000.0                               # 3.0-4.0 "K"
    with pytest.raises(InputError, match=r"lab.fits: 40 value\(s\) of 'teff'.* K.*thousands of K"):
        checks.check_training_labels(y, NAMES, ["K", "dex", "dex"], source="lab.fits")


def test_constant_label_and_all_nan_labels_are_refused():
    y = _labels()
    y[:, 1] = 4.8
    with pytest.raises(InputError, match="label 'logg' is constant"):
        checks.check_training_labels(y, NAMES)
    with pytest.raises(InputError, match="no row has finite labels"):
        checks.check_training_labels(np.full((5, 3), np.nan), NAMES)


def test_hyperparameters_nan_and_huge_epsilon_are_refused():
    checks.check_hyperparameters((1, 10), (0.0, 0.1), (0.1,))
    with pytest.raises(InputError, match=r"^C: \[nan\]"):
        checks.check_hyperparameters((1, np.nan), (0.1,), (0.1,))
    with pytest.raises(InputError, match=r"^epsilon: \[1000000.0\]"):
        checks.check_hyperparameters((1,), (0.1, 1e6), (0.1,))
    with pytest.raises(InputError, match="^gamma"):
        checks.check_hyperparameters((1,), (0.1,), (-1,))


def test_parse_floats_names_the_option():
    assert checks.parse_floats("1, 10,100", "--C") == (1.0, 10.0, 100.0)
    with pytest.raises(InputError, match=r"^--C: 'abc' is not a number"):
        checks.parse_floats("abc", "--C")


def test_cv_larger_than_the_training_set_and_one_star_are_refused():
    checks.check_cv(10, 10)
    with pytest.raises(InputError, match=r"cv=10: .*n_train=4"):
        checks.check_cv(10, 4)
    with pytest.raises(InputError, match="only 1 training star"):
        checks.check_cv(10, 1)


def test_label_text_with_a_unit_is_refused_and_masked_entries_become_nan():
    with pytest.raises(InputError, match=r"lab.csv: column 'teff' has 1 non-numeric value\(s\), e.g. '3300K'"):
        checks.label_values(np.array(["3100", "3300K", ""]), "teff", "lab.csv")
    v = checks.label_values(MaskedColumn([3100.0, 3200.0], mask=[False, True]), "teff", "lab.csv")
    assert v[0] == 3100.0 and np.isnan(v[1])


def test_all_zero_ivar_rows_are_excluded_and_all_zero_is_an_error(caplog):
    iv = np.ones((4, 10))
    iv[2] = 0.0
    with caplog.at_level(logging.WARNING, logger="mdslam"):
        keep = checks.check_training_ivar(iv, "s.npz")
    assert keep.tolist() == [True, True, False, True] and "1 of 4 spectra" in caplog.text
    with pytest.raises(InputError, match="s.npz: inverse variance is zero"):
        checks.check_training_ivar(np.zeros((3, 10)), "s.npz")


def test_duplicate_ids_are_refused():
    checks.check_unique_ids(["a", "b"], "lab.fits")
    with pytest.raises(InputError, match=r"lab.fits: column 'id' has 1 duplicated id\(s\), e.g. 'b'"):
        checks.check_unique_ids(["a", "b", "b "], "lab.fits")


def test_grid_problem_shift_reverse_length_and_tolerance():
    m = np.linspace(6147.0, 8888.0, 300)
    step = m[1] - m[0]
    assert checks.grid_problem(m + 0.05 * step, m) == ""            # inside 0.1 pixel
    assert "off by" in checks.grid_problem(m + 20000.0, m)          # 26,147-28,888 A
    assert "off by 0.2 pixels" in checks.grid_problem(m + 0.2 * step, m)
    assert "reversed" in checks.grid_problem(m[::-1], m)
    assert "299 wavelengths" in checks.grid_problem(m[:-1], m)
    assert checks.grid_problem(None, m) == ""


def test_require_grid_names_the_file_and_skips_models_without_a_grid():
    m = np.linspace(6147.0, 8888.0, 30)
    checks.require_grid(m.astype(np.float32), m, "a.npz")
    with pytest.raises(InputError, match=r"^a.npz: spectra are not on the model wavelength grid \(.*reversed"):
        checks.require_grid(m[::-1], m, "a.npz")
    checks.require_grid(m, np.arange(30.0), "a.npz")              # the model has no grid: length only
    with pytest.raises(InputError, match="29 wavelengths for a 30-pixel grid"):
        checks.require_grid(m[:-1], np.arange(30.0), "a.npz")


def test_same_grid_names_the_odd_file():
    w = np.linspace(1, 2, 5)
    checks.check_same_grid([w, None, w.copy()], ["a", "b", "c"])
    with pytest.raises(InputError, match=r"^c.npz: wavelength grid differs from a.npz's"):
        checks.check_same_grid([w, w, w + 1], ["a.npz", "b.npz", "c.npz"])


def test_flux_level_flags_unnormalised_spectra():
    f = np.ones((3, 50)) * 0.9
    f[1] *= 1000.0
    f[2] = np.nan
    assert checks.flux_level_problem(f, 0.95).tolist() == [False, True, False]


def test_knn_distance_against_brute_force():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(30, 3))
    pts = rng.normal(size=(5, 3))
    d_all = np.linalg.norm(pts[:, None] - ref[None], axis=2)
    assert np.allclose(checks.knn_distance(pts, ref, k=3), np.sort(d_all, axis=1)[:, 2])
    d_self = np.linalg.norm(ref[:, None] - ref[None], axis=2)
    assert np.allclose(checks.knn_distance(ref, ref, k=2, exclude_self=True), np.sort(d_self, axis=1)[:, 2])
    thr = checks.knn_threshold(ref, k=2)
    assert thr == pytest.approx(np.quantile(np.sort(d_self, axis=1)[:, 2], checks.KNN_QUANTILE))


def test_knn_distance_same_numbers_with_all_pairs_and_with_a_tree(monkeypatch):
    """Few pairs (every distance computed) and many (a k-d tree): the same numbers bit for bit, NaN rows NaN."""
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(400, 3))
    ref[7] = ref[8]                                          # a tie
    pts = np.vstack([rng.normal(size=(50, 3)) * 1.5, ref[:5], [[np.nan, 0.0, 0.0]]])
    few = [checks.knn_distance(pts, ref, k=k) for k in (1, 5)] + [checks.knn_distance(ref, ref, 5, exclude_self=True)]
    monkeypatch.setattr(checks, "KNN_BRUTE_PAIRS", 0)
    many = [checks.knn_distance(pts, ref, k=k) for k in (1, 5)] + [checks.knn_distance(ref, ref, 5, exclude_self=True)]
    for a, b in zip(few, many, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    assert np.isnan(few[0][-1]) and np.array_equal(few[0][50:55], np.zeros(5))


def test_rchi2_threshold_rule():
    r = np.linspace(0.2, 1.0, 101)
    assert checks.rchi2_threshold(r) == pytest.approx(max(2.0, 1.0 * np.quantile(r, 0.99)))
    assert checks.rchi2_threshold(np.linspace(0, 10, 101)) == pytest.approx(np.quantile(np.linspace(0, 10, 101), 0.99))
    assert checks.rchi2_threshold([np.nan]) == checks.RCHI2_FLOOR


def test_fit_quality_flags_sit_above_the_per_label_bits_and_are_documented():
    from mdslam.flags import LabelFlag, flag_table, label_flag_meanings

    per_label = [int(LabelFlag.OUTSIDE_DOMAIN) << k for k in range(8)]
    new = [LabelFlag.BAD_FIT, LabelFlag.FAR_FROM_TRAINING, LabelFlag.NOT_NORMALISED]
    assert all(int(b) > max(per_label) for b in new) and [int(b) for b in new] == [4096, 8192, 16384]
    names = set(flag_table()["name"])
    assert {"LabelFlag.BAD_FIT", "LabelFlag.FAR_FROM_TRAINING", "LabelFlag.NOT_NORMALISED"} <= names
    text = label_flag_meanings(int(LabelFlag.BAD_FIT | (LabelFlag.OUTSIDE_DOMAIN << 1)), ["teff", "fe_h"])
    assert text[0].startswith("reduced chi2 above") and text[1] == "fe_h outside the domain"


def test_fit_flags_bits():
    from mdslam.flags import LabelFlag

    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    theta = np.array([[0.5, 0.5], [5.0, 5.0], [0.5, 0.5]])
    flux = np.ones((3, 10))
    flux[2] *= 1000.0
    out = checks.fit_flags(np.array([0.5, 0.5, 9.0]), theta, X, flux, rchi2_threshold=3.0,
                           knn_threshold=1.0, knn_k=1, flux_level=1.0)
    assert out.tolist() == [0, int(LabelFlag.FAR_FROM_TRAINING),
                            int(LabelFlag.BAD_FIT | LabelFlag.NOT_NORMALISED)]


def test_row_nanmedian_equals_numpys_row_loop():
    """Random rows (>= 600 values, where np.nanmedian goes row by row, and 7) with NaN, +-inf, odd and even
    counts of finite values, all-missing rows: the numbers of np.nanmedian with inf as NaN, bit for bit; the
    flux-level flags equal those of that reference."""
    rng = np.random.default_rng(5)
    for n_pix in (1596, 7):
        a = rng.normal(1.0, 0.3, (400, n_pix))
        a[rng.random(a.shape) < 0.1] = np.nan
        a[rng.random(a.shape) < 0.01] = np.inf
        a[rng.random(a.shape) < 0.01] = -np.inf
        a[:100] = rng.normal(1.0, 0.3, (100, n_pix))               # complete rows
        assert np.array_equal(checks.row_nanmedian(a[:100]), np.median(a[:100], axis=1))    # only complete ones
        a[100] = np.nan
        a[101, 1:] = np.nan
        a[200:250] *= 100.0                                         # not normalised
        a[250:300] *= 0.01
        ref = np.full(a.shape[0], np.nan)
        for i, row in enumerate(np.where(np.isfinite(a), a, np.nan)):
            if np.isfinite(row).any():
                ref[i] = np.nanmedian(row)
        got = checks.row_nanmedian(a)
        assert np.array_equal(got, ref, equal_nan=True), n_pix
        with np.errstate(invalid="ignore"):
            ratio = ref / 1.1
        want = np.isfinite(a).any(axis=1) & ((ratio < checks.FLUX_LEVEL_RANGE[0])
                                             | (ratio > checks.FLUX_LEVEL_RANGE[1]) | ~np.isfinite(ratio))
        assert np.array_equal(checks.flux_level_problem(a, 1.1), want)
        assert want.any() and not want.all()
