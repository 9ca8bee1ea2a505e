"""Model-grid SLAM (Li et al. 2021 sec. 4.1.2): SLAM_0 on a sparse grid -> uniform draws -> SLAM_1.

Li et al. (2021) get TEFF_BT from synthetic spectra in three steps:

1. **SLAM_0** is trained on the sparse BT-Settl grid (their 100 K x 0.5 dex x
   0.5 dex nodes), used as an interpolator (SLAM is a forward model);
2. 15,000 label points are drawn **uniformly** in 2800 < Teff < 4500 K,
   -1 < [M/H] < 0, 4.5 < log g < 5.5 and their spectra computed by SLAM_0;
3. **SLAM_1** is trained on those draws (10-fold CV) and applied to the real
   LAMOST spectra. Its CV errors are measured with Gaussian noise added to the
   test spectra (their Fig. 2 left: 40 K scatter, 5 K bias at SNR > 100).

:func:`train_grid_slam` runs the three steps on any :class:`mdslam.modelgrid.ModelGrid`
already taken to the survey (:func:`mdslam.modelgrid.to_survey`). The noisy
test (:func:`noisy_test`) draws *independent* held-out label points through
SLAM_0, adds the survey's photon noise at each SNR and labels them with SLAM_1;
SLAM_1's own k-fold CV (``cv_mse_``) chooses its hyperparameters as for any
SLAM. :func:`recovery_on_mock` checks known truth on the mock track,
:func:`compare_literature` the 54 real LAMOST spectra, and
:func:`teff_bt_table` writes Li's Table 2 columns TEFF_BT / TEFF_BT_ERR.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from . import modelgrid
from .slam import SLAM

__all__ = [
    "LI2021_DRAW_RANGES",
    "LI2021_N_DRAW",
    "QUICK_GRID",
    "GridSLAMResult",
    "survey_grid",
    "draw_uniform",
    "add_photon_noise",
    "skill_score",
    "train_grid_slam",
    "noisy_test",
    "as_binned",
    "recovery_on_mock",
    "compare_literature",
    "teff_bt_table",
    "LI2021_TEFF_BT_LITERATURE",
    "compare_teff_bt",
]

LI2021_DRAW_RANGES = {"teff": (2800.0, 4500.0), "m_h": (-1.0, 0.0), "logg": (4.5, 5.5)}
"""Li et al. (2021) sec. 4.1.2: the uniform ranges of the SLAM_0 draws (K, dex, dex)."""

LI2021_N_DRAW = 15_000
"""Li et al. (2021) sec. 4.1.2: number of spectra drawn through SLAM_0."""

QUICK_GRID = dict(C=(10.0, 100.0), epsilon=(0.03,), gamma=(0.3, 1.0))
"""A 4-point (C, epsilon, gamma) grid for quick runs of SLAM_0 and SLAM_1 (book, CI, tests):
noiseless draws need little tube width; the full grid is :data:`mdslam.slam.DEFAULT_C` etc."""

MOCK_TEFF_MAX = 3800.0
"""Upper Teff of the draws on the mock grid, K (the mock's templates stop at M0V, 3833 K)."""

_I_BAND = (6800.0, 8300.0)


def survey_grid(grid: str = "mock", survey: str = "lamost", *, reduced: bool = False,
                wavelength: np.ndarray | None = None) -> modelgrid.ModelGrid:
    """A model grid taken to a survey (convolved, rebinned, normalised), by name.

    Parameters
    ----------
    grid : {"mock", "btsettl"}
        The offline template grid (:func:`mdslam.modelgrid.mock_grid`) or
        BT-Settl CIFIST from SVO (archive mode, :func:`mdslam.modelgrid.btsettl_grid`,
        nodes 2600-4600 K, log g 4.5-5.5, [M/H] -1 to 0).
    survey : {"lamost", "boss"}
    reduced : bool
        Mock grid only: Teff nodes every 200 K instead of 100 K (for quick runs).
    wavelength : ndarray, optional
        Output grid (default: the LAMOST track's 1596 pixels, 6147-8888 A).
    """
    if grid == "mock":
        step = 200.0 if reduced else 100.0
        g = modelgrid.mock_grid(survey, teff_nodes=np.arange(2600.0, 3801.0, step))
    elif grid == "btsettl":
        g = modelgrid.btsettl_grid()
    else:
        raise ValueError(f"grid must be 'mock' or 'btsettl', not {grid!r}")
    return modelgrid.to_survey(g, survey, wavelength)


def draw_uniform(ranges: dict[str, tuple[float, float]], n: int, seed: int = 0) -> Table:
    """``n`` label points drawn uniformly and independently in each range.

    Parameters
    ----------
    ranges : dict
        ``{label: (low, high)}`` in physical units.
    n : int
    seed : int

    Returns
    -------
    astropy.table.Table
        One column per label, in the order of ``ranges``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    return Table({k: rng.uniform(lo, hi, n) for k, (lo, hi) in ranges.items()})


def add_photon_noise(flux: np.ndarray, snr: np.ndarray | float, wavelength: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise of the survey's photon-noise model on normalised spectra.

    ``sigma = sqrt(F * F_i) / SNR`` with ``F_i`` the median flux in 6800-8300 A
    (the mock's noise model, :mod:`mdslam.mock`): SNR is the median per-pixel
    S/N in the i band, as LAMOST's ``snri``.

    Parameters
    ----------
    flux : ndarray, shape (n, n_pix)
        Noiseless normalised flux.
    snr : float or ndarray, shape (n,)
    wavelength : ndarray, shape (n_pix,), Angstrom
    rng : numpy.random.Generator

    Returns
    -------
    (noisy flux, ivar), both (n, n_pix).
    """
    f = np.atleast_2d(np.asarray(flux, float))
    snr = np.broadcast_to(np.asarray(snr, float), (f.shape[0],))
    band = (wavelength >= _I_BAND[0]) & (wavelength <= _I_BAND[1])
    fi = np.median(f[:, band] if band.any() else f, axis=1)
    sigma = np.sqrt(np.maximum(f, 1e-3) * fi[:, None]) / snr[:, None]
    return f + sigma * rng.standard_normal(f.shape), 1.0 / sigma**2


def skill_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """``1 - MSE / Var(truth)``: 1 perfect, 0 no better than the mean of the truth, < 0 worse."""
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    ok = np.isfinite(pred) & np.isfinite(truth)
    if ok.sum() < 2:
        return float("nan")
    var = np.var(truth[ok])
    return float(1.0 - np.mean((pred[ok] - truth[ok]) ** 2) / var) if var > 0 else float("nan")


@dataclass
class GridSLAMResult:
    """What :func:`train_grid_slam` made.

    Attributes
    ----------
    slam0, slam1 : SLAM
        The interpolator trained on the grid nodes and the model trained on the draws.
    grid : ModelGrid
        The grid on the survey's wavelength grid.
    draws : astropy.table.Table
        The uniform label draws SLAM_1 was trained on.
    draw_snr : float or None
        SNR of the noise added to the draws (None: noiseless, as Li et al.).
    timings : dict
        Wall-clock seconds of each step and the peak resident memory (MB).
    """

    slam0: SLAM
    slam1: SLAM
    grid: modelgrid.ModelGrid
    draws: Table
    draw_snr: float | None
    timings: dict = field(default_factory=dict)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train_grid_slam(grid: modelgrid.ModelGrid, n_draw: int = 1000,
                    ranges: dict[str, tuple[float, float]] | None = None, *, draw_snr: float | None = None,
                    cv: int = 10, seed: int = 0, slam_kwargs: dict | None = None,
                    slam0_kwargs: dict | None = None) -> GridSLAMResult:
    """SLAM_0 on the grid nodes, ``n_draw`` uniform draws through it, SLAM_1 on the draws.

    Parameters
    ----------
    grid : ModelGrid
        Normalised grid on the survey's wavelength grid (:func:`survey_grid`).
    n_draw : int
        Number of draws (Li et al.: 15,000).
    ranges : dict, optional
        Uniform draw ranges per label of the grid. Default: Li et al.'s
        (:data:`LI2021_DRAW_RANGES`) for the grid's labels, clipped to the
        grid's node range (the mock grid stops at 3800 K).
    draw_snr : float, optional
        Add the survey's photon noise at this SNR to the draws (default: none,
        noiseless draws as in Li et al.).
    cv : int
        k of SLAM_1's k-fold CV (Li et al.: 10). SLAM_0 uses ``min(cv, 5)``.
    seed : int
        Seed of the draws, the noise and the CV folds.
    slam_kwargs : dict, optional
        :class:`mdslam.slam.SLAM` parameters of SLAM_1 (e.g. ``C``, ``epsilon``,
        ``gamma`` grids, ``n_jobs``).
    slam0_kwargs : dict, optional
        Of SLAM_0 (default: those of SLAM_1).

    Returns
    -------
    GridSLAMResult
        SLAM_1 sets no ``BAD_FIT`` threshold (``rchi2_threshold_`` is inf): the
        reduced chi2 of the draws does not describe an observed spectrum's, which
        includes the grid's mismatch with real stars.
    """
    kw1 = dict(slam_kwargs or {})
    kw0 = dict(slam0_kwargs if slam0_kwargs is not None else kw1)
    y = grid.y
    if ranges is None:
        ranges = {}
        for k, name in enumerate(grid.label_names):
            lo, hi = LI2021_DRAW_RANGES.get(name, (y[:, k].min(), y[:, k].max()))
            ranges[name] = (max(lo, y[:, k].min()), min(hi, y[:, k].max()))
    missing = [k for k in grid.label_names if k not in ranges]
    if missing:
        raise ValueError(f"ranges has no entry for the grid label(s) {missing}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    slam0 = SLAM(cv=min(cv, 5, len(grid)), random_state=seed, **kw0)
    slam0.fit(grid.flux, y, grid.ivar, wavelength=grid.wavelength, label_names=grid.label_names,
              label_units=grid.label_units)
    timings["slam0_fit_s"] = time.perf_counter() - t0
    draws = draw_uniform({k: ranges[k] for k in grid.label_names}, n_draw, seed)
    draws.meta["ranges"] = {k: tuple(map(float, ranges[k])) for k in grid.label_names}
    lab = np.column_stack([np.asarray(draws[k], float) for k in grid.label_names])
    t0 = time.perf_counter()
    flux = slam0.predict_flux(lab)
    ivar = None
    if draw_snr is not None:
        flux, ivar = add_photon_noise(flux, draw_snr, grid.wavelength, np.random.default_rng(seed + 1))
    timings["draws_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    slam1 = SLAM(cv=cv, random_state=seed, **kw1)
    slam1.fit(flux, lab, ivar, wavelength=grid.wavelength, label_names=grid.label_names,
              label_units=grid.label_units)
    timings["slam1_fit_s"] = time.perf_counter() - t0
    # The draws' reduced chi2 (noiseless, or noise drawn from the model itself) says nothing of an
    # observed spectrum's, which also holds the grid's own mismatch with real stars: a model-grid
    # SLAM learns no BAD_FIT threshold (Li et al. 2021 cut none); the other flags still apply.
    slam1.rchi2_threshold_ = np.inf
    timings["peak_rss_mb"] = _peak_mb()
    timings["n_draw"] = n_draw
    timings["n_pix"] = grid.wavelength.size
    timings["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return GridSLAMResult(slam0, slam1, grid, draws, draw_snr, timings)


def _stats(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    d = pred - truth
    ok = np.isfinite(d)
    return {"n": int(ok.sum()), "bias": float(np.mean(d[ok])) if ok.any() else np.nan,
            "scatter": float(np.std(d[ok])) if ok.sum() > 1 else np.nan,
            "spread": float(np.std(truth[ok])) if ok.sum() > 1 else np.nan,
            "skill": skill_score(pred, truth)}


def noisy_test(result: GridSLAMResult, snr: list[float] | np.ndarray, n_test: int = 300, *,
               seed: int = 1, fit_error_law: bool = True) -> Table:
    """CV bias and scatter of SLAM_1 against SNR with noise added as Li et al. (Fig. 2 left).

    ``n_test`` label points are drawn in the training ranges, independently of
    SLAM_1's draws (a held-out set), their SLAM_0 spectra get the survey's
    photon noise at each SNR, and SLAM_1 labels them.

    Parameters
    ----------
    result : GridSLAMResult
    snr : sequence of float
        SNR values (median per-pixel S/N in 6800-8300 A).
    n_test : int
        Spectra per SNR value.
    seed : int
        Seed of the held-out draws and their noise (use one that differs from
        the training seed).
    fit_error_law : bool
        Also fit SLAM_1's ``sigma = a SNR^b`` law (Qiu eqs. 6-8) to these
        results, so that :meth:`mdslam.slam.SLAM.predict_table` gives ``e_<label>_cv``.

    Returns
    -------
    astropy.table.Table
        One row per (SNR, label): ``snr``, ``label``, ``n``, ``bias``,
        ``scatter`` (std of pred - truth), ``spread`` (std of the truth) and
        ``skill`` (1 - MSE/Var).
    """
    s1 = result.slam1
    names = s1.label_names_
    ranges = {k: result.draws.meta["ranges"][k] for k in names}
    test = draw_uniform(ranges, n_test, seed + 1000)
    lab = np.column_stack([np.asarray(test[k], float) for k in names])
    clean = result.slam0.predict_flux(lab)
    rng = np.random.default_rng(seed)
    rows, all_snr, all_true, all_pred = [], [], [], []
    for s in snr:
        fx, iv = add_photon_noise(clean, float(s), result.grid.wavelength, rng)
        pred = s1.predict(fx, iv)
        for k, name in enumerate(names):
            rows.append({"snr": float(s), "label": name, **_stats(pred[:, k], lab[:, k])})
        all_snr.append(np.full(n_test, float(s)))
        all_true.append(lab)
        all_pred.append(pred)
    tab = Table(rows=rows)
    if fit_error_law and len(snr) >= 2:
        s1.fit_error_law(np.concatenate(all_snr), np.vstack(all_true), np.vstack(all_pred),
                         n_bins=len(snr), min_per_bin=min(20, n_test))
    tab.meta["n_test"] = n_test
    return tab


def as_binned(tab: Table, label_names: list[str], snr_col: str = "snr") -> Table:
    """Rows of :func:`noisy_test` or :func:`recovery_on_mock` as one row per SNR value.

    Returns the layout of :func:`mdslam.validation.binned_bias_scatter`
    (``snr_median``, ``n``, ``bias`` and ``scatter`` of shape (n_bins, n_label),
    ``skill`` likewise), which :func:`mdslam.plots.cv_vs_snr` draws.
    """
    keys = sorted(set(np.asarray(tab[snr_col], float)))
    out = Table()
    out["snr_median"] = keys if snr_col == "snr" else [
        float(np.sqrt(k * tab["snr_hi"][tab[snr_col] == k][0])) for k in keys]
    for col in ("bias", "scatter", "skill", "spread"):
        out[col] = np.array([[float(tab[col][(tab[snr_col] == k) & (tab["label"] == name)][0])
                              for name in label_names] for k in keys])
    out["n"] = [int(tab["n"][tab[snr_col] == k][0]) for k in keys]
    return out


def recovery_on_mock(model: SLAM, survey: str = "lamost", snr_edges: tuple[float, ...] = (2, 5, 10, 20, 50, 100),
                     n_per_bin: int = 100, *, teff_range: tuple[float, float] = (2800.0, MOCK_TEFF_MAX),
                     m_h_range: tuple[float, float] = (-1.0, 0.0), seed: int = 7) -> tuple[Table, Table]:
    """Known-truth recovery on the mock track: bias, scatter and skill per SNR bin.

    Mock spectra (:class:`mdslam.mock.MockSurvey`: flux-calibration error,
    cosmic rays, dead pixels, photon noise) with labels uniform in the ranges
    and SNR log-uniform inside each bin are preprocessed like observed spectra
    (:func:`mdslam.preprocess.preprocess`) onto the model's grid and labelled.

    Returns
    -------
    (stats, labels)
        ``stats``: one row per (SNR bin, label) with ``snr_lo``, ``snr_hi``,
        ``n``, ``bias``, ``scatter``, ``spread``, ``skill``, ``n_flagged``;
        ``labels``: per spectrum, truth and prediction.
    """
    from . import mock, preprocess

    ms = mock.MockSurvey(survey, seed=seed, labels="uniform")
    rng = np.random.default_rng(seed)
    names = model.label_names_
    truth_col = {"teff": "teff_true", "m_h": "feh_true", "logg": "logg_true"}
    rows, parts = [], []
    for lo, hi in zip(snr_edges[:-1], snr_edges[1:], strict=True):
        t = rng.uniform(*teff_range, n_per_bin)
        m = rng.uniform(*m_h_range, n_per_bin)
        s = np.exp(rng.uniform(np.log(lo), np.log(hi), n_per_bin))
        sp = ms.spectrum(teff=t, feh=m, snr=s)
        pp = preprocess.preprocess(sp, model.wavelength_, rv=0.0, progress=False)
        pred = model.predict_table(pp)
        part = Table({"snr": s, "snr_lo": np.full(n_per_bin, lo), "snr_hi": np.full(n_per_bin, hi)})
        for name in names:
            part[f"{name}_true"] = np.asarray(sp.meta[truth_col.get(name, name)], float)
            part[name] = np.asarray(pred[name], float)
        part["flag"] = np.asarray(pred["flag"])
        parts.append(part)
        for name in names:
            st = _stats(np.asarray(part[name]), np.asarray(part[f"{name}_true"]))
            rows.append({"snr_lo": lo, "snr_hi": hi, "label": name, **st,
                         "n_flagged": int(np.sum(part["flag"] != 0))})
    from astropy.table import vstack

    stats = Table(rows=rows)
    stats.meta["track"] = f"mock ({survey.upper()} resolution; {mock.MOCK_CAPTION})"
    return stats, vstack(parts)


def compare_literature(pred: Table, lit: Table, *, pairs: dict[str, str] | None = None,
                       default_feh: float = -0.05) -> Table:
    """Labels against literature values: bias, scatter, n, flags (the 54 LAMOST spectra).

    Parameters
    ----------
    pred : Table
        :meth:`mdslam.slam.SLAM.predict_table` output, rows matching ``lit``.
    lit : Table
        Literature labels (the LAMOST track: ``teff``, ``feh``, ``logg``).
    pairs : dict, optional
        ``{predicted column: literature column}``; default ``teff -> teff``,
        ``m_h -> feh``, ``logg -> logg`` where both exist.
    default_feh : float
        A literature [Fe/H] equal to this (the LAMOST track's placeholder
        -0.05) counts as missing for the metallicity rows; a second row with
        ``sample = "all"`` keeps them.

    Returns
    -------
    astropy.table.Table
        ``label``, ``sample``, ``n``, ``n_flagged``, ``bias`` (median of
        pred - lit), ``scatter`` (std), ``robust_scatter`` (1.4826 MAD),
        ``pearson_r``, ``spread`` (std of lit).
    """
    pairs = pairs or {k: v for k, v in (("teff", "teff"), ("m_h", "feh"), ("logg", "logg"))
                      if k in pred.colnames and v in lit.colnames}
    flag = np.asarray(pred["flag"]) != 0
    rows = []
    for pc, lc in pairs.items():
        p, v = np.asarray(pred[pc], float), np.asarray(lit[lc], float)
        samples = [("unflagged", ~flag), ("all labelled", np.ones(flag.size, bool))]
        if lc == "feh":
            real = ~np.isclose(v, default_feh)
            samples = [(f"unflagged, [Fe/H] != {default_feh:g}", ~flag & real), ("unflagged, all", ~flag)]
        for label, sel in samples:
            ok = sel & np.isfinite(p) & np.isfinite(v)
            d = p[ok] - v[ok]
            n = int(ok.sum())
            r = float(np.corrcoef(p[ok], v[ok])[0, 1]) if n > 2 and np.std(v[ok]) > 0 else np.nan
            rows.append({"label": pc, "sample": label, "n": n, "n_flagged": int(flag.sum()),
                         "bias": float(np.median(d)) if n else np.nan,
                         "scatter": float(np.std(d)) if n > 1 else np.nan,
                         "robust_scatter": float(1.4826 * np.median(np.abs(d - np.median(d)))) if n else np.nan,
                         "pearson_r": r, "spread": float(np.std(v[ok])) if n > 1 else np.nan})
    return Table(rows=rows)


def teff_bt_table(pred: Table, ids: dict[str, tuple[np.ndarray, str]] | None = None, *,
                  grid_name: str = "mock") -> Table:
    """Li et al. (2021) Table 2 columns TEFF_BT and TEFF_BT_ERR from SLAM_1 labels.

    ``TEFF_BT_ERR`` is the empirical ``a * SNR**b`` law (``e_teff_cv``) where
    SLAM_1 has one, else the formal uncertainty.

    Parameters
    ----------
    pred : Table
        :meth:`mdslam.slam.SLAM.predict_table` of SLAM_1.
    ids : dict, optional
        ``{column: (values, description)}`` written first (e.g. ``obsid``).
    grid_name : str
        The training grid, for the column descriptions (``"mock"``: the
        offline template grid, not BT-Settl).

    Returns
    -------
    astropy.table.Table
        ids, ``TEFF_BT`` [K], ``TEFF_BT_ERR`` [K], ``M_H_BT`` [dex] (not adopted by
        Li et al.; kept for the skill test), ``SNR``, ``FLAG_BT``, units and
        descriptions set.
    """
    t = Table()
    for name, (values, desc) in (ids or {}).items():
        t[name] = values
        t[name].description = desc
    what = "BT-Settl-trained SLAM_1" if grid_name == "btsettl" else f"SLAM_1 trained on the {grid_name} grid"
    e = np.asarray(pred["e_teff_cv"], float) if "e_teff_cv" in pred.colnames else np.full(len(pred), np.nan)
    e = np.where(np.isfinite(e), e, np.asarray(pred["e_teff"], float))
    t["TEFF_BT"] = np.asarray(pred["teff"], float)
    t["TEFF_BT"].unit = "K"
    t["TEFF_BT"].description = f"effective temperature from {what}"
    t["TEFF_BT_ERR"] = e
    t["TEFF_BT_ERR"].unit = "K"
    t["TEFF_BT_ERR"].description = "uncertainty of TEFF_BT (empirical a*SNR^b where fitted, else formal)"
    if "m_h" in pred.colnames:
        t["M_H_BT"] = np.asarray(pred["m_h"], float)
        t["M_H_BT"].unit = "dex"
        t["M_H_BT"].description = f"[M/H] from {what} (not adopted by Li et al. 2021)"
    t["SNR"] = np.asarray(pred["snr"], float)
    t["SNR"].description = "median per-pixel S/N used by SLAM"
    t["FLAG_BT"] = np.asarray(pred["flag"], np.int32)
    t["FLAG_BT"].description = pred["flag"].description or "SLAM label flags (mdslam.flags.LabelFlag)"
    t.meta["GRID"] = grid_name
    return t


LI2021_TEFF_BT_LITERATURE = {
    "B20": ("~110 K", "~90 K", "sec. 4.1.2, Fig. 3 (bottom)"),
    "TESS CDC": ("~100 K", "114 K", "sec. 4.1.2"),
    "Galgano 2020": ("50 (unit not printed)", "65 K", "sec. 4.1.2, Fig. 4"),
}
"""Li et al. (2021) sec. 4.1.2: TEFF_BT against B20, the TESS Cool Dwarf Catalog (Muirhead et al.
2018) and Galgano et al. (2020), as printed: reference -> (offset, scatter, where). The paper
gives no sign for the offsets."""


def compare_teff_bt(cat: Table, references: dict[str, tuple[Table, str, str, str]], *,
                    ra: str = "ra", dec: str = "dec", radius_arcsec: float = 3.0,
                    select: np.ndarray | None = None) -> tuple[Table, dict[str, Table]]:
    """TEFF_BT minus the Teff of published catalogues on the stars they share (Li et al. 2021 Figs. 3-4).

    Each reference is matched on the sky (nearest neighbour within
    ``radius_arcsec``, one-to-one; :func:`mdslam.crossmatch.compare_catalogues`).

    Parameters
    ----------
    cat : Table
        From :func:`teff_bt_table` with the positions added (``ra``, ``dec`` [deg]).
    references : dict
        ``{name: (table, teff column, ra column, dec column)}``; a name of
        :data:`LI2021_TEFF_BT_LITERATURE` gets the paper's numbers beside ours.
    ra, dec : str
        Position columns of ``cat`` [deg].
    radius_arcsec : float
        Largest separation of a match.
    select : (len(cat),) bool, optional
        Rows of ``cat`` to use (e.g. ``FLAG_BT == 0``).

    Returns
    -------
    stats : Table
        One row per reference: ``reference``, ``n``, ``offset`` (median of
        TEFF_BT - Teff) [K], ``scatter`` (std) [K], ``robust_scatter`` [K], and
        the paper's ``paper_offset``, ``paper_scatter``, ``where`` (empty if none).
    matched : dict of str -> Table
        The matched rows of each reference (``TEFF_BT``, the reference Teff, ``sep_arcsec``).
    """
    from .crossmatch import compare_catalogues

    rows, matched = [], {}
    for name, (tab, teff, rra, rdec) in references.items():
        st, m = compare_catalogues(cat, tab, {"TEFF_BT": teff}, sky=(ra, dec, rra, rdec),
                                   radius_arcsec=radius_arcsec, select=select, reference=name)
        paper = LI2021_TEFF_BT_LITERATURE.get(name, ("", "", ""))
        r = st[0]
        rows.append((name, int(r["n"]), float(r["offset"]), float(r["scatter"]), float(r["robust_scatter"]),
                     *paper))
        matched[name] = m
    stats = Table(rows=rows, names=("reference", "n", "offset", "scatter", "robust_scatter", "paper_offset",
                                    "paper_scatter", "where"),
                  dtype=(str, int, float, float, float, str, str, str))
    for c in ("offset", "scatter", "robust_scatter"):
        stats[c].unit = "K"
    return stats, matched
