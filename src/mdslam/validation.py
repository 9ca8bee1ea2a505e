"""Validation statistics: CV bias/scatter vs SNR, comparison statistics, pairs, clusters.

Qiu et al. 2025 eqs. 4-5 (CV bias and CV scatter; eq. 5 is read as the
standard deviation ``sqrt(mean((theta_SLAM - theta)^2))``, the printed 1/m
outside the root is a slip), the equal-count SNR bins of their Fig. 5 and the
power-law fits of eqs. 6-8; the "median +- standard deviation" comparisons of
both papers (:func:`compare`, :func:`binned_medians`), the wide-binary
consistency test of Li et al. 2021 sec. 5.2 (:func:`pair_statistics`) and the
open-cluster table of Li et al. 2021 Table 3 (:func:`cluster_statistics`) and the
FGK+FGK wide-binary test of the sign of Q25 eq. 11 (:func:`niu2023_sign_test`).

Conventions: differences are ``x - y`` (e.g. SLAM minus reference); standard
deviations use ``ddof=0`` (numpy's default); the robust scatter is
``1.4826 * median(|d - median(d)|)``; NaN pairs are dropped everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from astropy.table import Table
from scipy.optimize import curve_fit

__all__ = [
    "cv_bias",
    "cv_scatter",
    "binned_bias_scatter",
    "fit_power_law",
    "skill",
    "skill_table",
    "paired_bootstrap",
    "fit_floor_law",
    "fit_floor_laws",
    "flag_cuts",
    "FloorLaw",
    "robust_std",
    "Comparison",
    "compare",
    "compare_groups",
    "regression_slope",
    "binned_medians",
    "fit_gaussian",
    "PairStatistics",
    "pair_statistics",
    "cluster_statistics",
    "NIU2023_CONVENTIONS",
    "niu2023_pair_differences",
    "niu2023_sign_test",
    "ESTIMATORS",
    "ESTIMATOR_TITLES",
    "default_baselines",
    "estimator_fold",
    "label_fold",
    "likelihood_model",
    "LABEL_RANKS",
    "label_rank_predict",
    "estimator_summary",
    "estimator_cv_table",
    "compare_estimators",
]


def cv_bias(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CV bias, Qiu eq. 4: mean of ``pred - truth`` along axis 0 (ignores NaN)."""
    return np.nanmean(np.asarray(pred, float) - np.asarray(truth, float), axis=0)


def cv_scatter(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CV scatter, Qiu eq. 5 read as a standard deviation: ``sqrt(mean((pred - truth)^2))``."""
    d = np.asarray(pred, float) - np.asarray(truth, float)
    return np.sqrt(np.nanmean(d**2, axis=0))


def binned_bias_scatter(snr: np.ndarray, pred: np.ndarray, truth: np.ndarray, n_bins: int = 6,
                        min_per_bin: int = 20) -> Table:
    """CV bias and scatter in equal-count SNR bins (Qiu 2025 Fig. 5).

    Parameters
    ----------
    snr : (n,) array
        Spectral SNR of each star.
    pred, truth : (n,) or (n, n_labels) arrays
        Predicted (e.g. k-fold CV) and reference labels.
    n_bins : int
        Number of equal-count bins; reduced so that every bin holds at least
        ``min_per_bin`` stars.

    Returns
    -------
    Table with columns ``snr_lo``, ``snr_hi``, ``snr_median``, ``n``, ``bias``
    and ``scatter`` (the last two of shape (n_bins, n_labels) when 2-D input).
    """
    snr = np.asarray(snr, float)
    pred = np.asarray(pred, float)
    truth = np.asarray(truth, float)
    ok = np.isfinite(snr)
    snr, pred, truth = snr[ok], pred[ok], truth[ok]
    n_bins = int(max(1, min(n_bins, len(snr) // max(min_per_bin, 1))))
    order = np.argsort(snr)
    groups = np.array_split(order, n_bins)
    rows = []
    for g in groups:
        rows.append((snr[g].min(), snr[g].max(), np.median(snr[g]), len(g),
                     cv_bias(pred[g], truth[g]), cv_scatter(pred[g], truth[g])))
    return Table(rows=rows, names=("snr_lo", "snr_hi", "snr_median", "n", "bias", "scatter"))


def fit_power_law(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None) -> tuple[float, float, np.ndarray]:
    """Fit ``y = a * x**b`` (Qiu 2025 eqs. 6-8) by least squares in linear space.

    Returns ``(a, b, cov)`` with ``cov`` the 2x2 covariance of (a, b).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        raise ValueError(f"need at least two positive points to fit a power law, got {len(x)}")
    b0, loga0 = np.polyfit(np.log(x), np.log(y), 1)
    p, cov = curve_fit(lambda t, a, b: a * t**b, x, y, p0=(np.exp(loga0), b0),
                       sigma=None if sigma is None else np.asarray(sigma, float)[ok], maxfev=10000)
    return float(p[0]), float(p[1]), cov


def skill(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Skill score ``1 - MSE / Var(truth)`` along axis 0 (NaN pairs dropped).

    1 is a perfect prediction, 0 is no better than predicting the mean label of
    the sample for every star, negative is worse than that. ``Var`` uses
    ddof=0, as :func:`cv_scatter` (whose square is the MSE).

    Parameters
    ----------
    pred, truth : (n,) or (n, n_labels) arrays
        Predicted (e.g. CV) and reference labels, same unit.

    Returns
    -------
    float or (n_labels,) array
        NaN where fewer than 2 finite pairs or the labels do not vary.
    """
    p = np.asarray(pred, float)
    t = np.asarray(truth, float)
    p2, t2 = (p[:, None], t[:, None]) if p.ndim == 1 else (p, t)
    out = np.full(p2.shape[1], np.nan)
    for k in range(p2.shape[1]):
        ok = np.isfinite(p2[:, k]) & np.isfinite(t2[:, k])
        if ok.sum() < 2:
            continue
        var = np.var(t2[ok, k])
        if var > 0:
            out[k] = 1.0 - np.mean((p2[ok, k] - t2[ok, k]) ** 2) / var
    return out[0] if p.ndim == 1 else out


def skill_table(snr: np.ndarray, pred: np.ndarray, truth: np.ndarray, label_names, *,
                snr_edges: np.ndarray | None = None, n_bins: int = 4, min_per_bin: int = 20) -> Table:
    """CV bias, scatter, label spread and skill per label, over all stars and per SNR bin.

    Parameters
    ----------
    snr : (n,) array
        Spectral SNR.
    pred, truth : (n, n_labels) arrays
        Predicted (CV) and reference labels, physical units.
    label_names : sequence of str, length n_labels
    snr_edges : array, optional
        Bin edges in SNR (e.g. ``[30, 50, 100, inf]``); default ``n_bins``
        equal-count bins of at least ``min_per_bin`` stars
        (:func:`binned_bias_scatter`'s rule).

    Returns
    -------
    Table
        One row per (label, bin), the first row of each label for all stars
        (``snr_lo`` and ``snr_hi`` the SNR range of the sample): ``label``,
        ``snr_lo``, ``snr_hi``, ``n``, ``bias`` (eq. 4), ``scatter`` (eq. 5),
        ``label_std`` (std of the reference labels of the bin) and ``skill``
        (:func:`skill`, ``1 - scatter**2 / label_std**2``).
    """
    snr = np.asarray(snr, float)
    p = np.asarray(pred, float).reshape(snr.size, -1)
    t = np.asarray(truth, float).reshape(snr.size, -1)
    names = list(label_names)
    ok = np.isfinite(snr)
    if snr_edges is None:
        nb = int(max(1, min(n_bins, ok.sum() // max(min_per_bin, 1))))
        groups = np.array_split(np.flatnonzero(ok)[np.argsort(snr[ok])], nb)
    else:
        e = np.asarray(snr_edges, float)
        groups = [np.flatnonzero(ok & (snr > lo) & (snr <= hi)) for lo, hi in zip(e[:-1], e[1:], strict=True)]
    groups = [np.flatnonzero(ok)] + [g for g in groups if g.size]
    rows = []
    for k, name in enumerate(names):
        for g in groups:
            fin = g[np.isfinite(p[g, k]) & np.isfinite(t[g, k])]
            if fin.size == 0:
                rows.append((name, np.nan, np.nan, 0, np.nan, np.nan, np.nan, np.nan))
                continue
            rows.append((name, float(snr[g].min()), float(snr[g].max()), int(fin.size),
                         float(cv_bias(p[fin, k], t[fin, k])), float(cv_scatter(p[fin, k], t[fin, k])),
                         float(np.std(t[fin, k])), float(skill(p[fin, k], t[fin, k]))))
    return Table(rows=rows, names=("label", "snr_lo", "snr_hi", "n", "bias", "scatter", "label_std", "skill"))


def paired_bootstrap(pred_a: np.ndarray, pred_b: np.ndarray, truth: np.ndarray, label_names=None, *,
                     n_boot: int = 10000, confidence: float = 0.95, random_state: int = 0) -> Table:
    """Paired bootstrap of the MSE and skill differences of two predictions of the same stars, per label.

    The stars are resampled with replacement (the same draw for both
    predictions, which stay as they are: CV predictions keep their folds);
    each resample gives ``d_mse = MSE_a - MSE_b`` and ``d_skill = skill_a -
    skill_b = (MSE_b - MSE_a) / Var(truth)`` (:func:`skill`, the variance of
    the resampled labels). The interval is the percentile interval of the
    resamples.

    Parameters
    ----------
    pred_a, pred_b : (n,) or (n, n_labels) arrays
        The two predictions (e.g. SLAM's and the best baseline's CV labels), label units.
    truth : (n,) or (n, n_labels) array
        Reference labels, same unit.
    label_names : sequence of str, optional
        Default ``label0, label1, ...``.
    n_boot : int
        Number of resamples.
    confidence : float
        Coverage of the interval (0.95: the 2.5th to 97.5th percentile).
    random_state : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    Table
        One row per label: ``label``, ``n`` (stars with all three finite),
        ``rms_a``, ``rms_b`` (label units), ``skill_a``, ``skill_b``, ``d_mse``
        (label unit squared) with ``d_mse_lo``/``d_mse_hi``, ``d_skill`` with
        ``d_skill_lo``/``d_skill_hi`` (point values on all stars, interval
        from the resamples), and ``frac_a_better`` (fraction of resamples with
        ``d_mse < 0``). Resamples whose labels do not vary are dropped from
        the skill interval.

    Raises
    ------
    ValueError
        The arrays differ in shape, or ``n_boot < 1`` or ``confidence`` not in (0, 1).
    """
    a, b, t = (np.asarray(v, float) for v in (pred_a, pred_b, truth))
    if not a.shape == b.shape == t.shape:
        raise ValueError(f"paired_bootstrap: pred_a {a.shape}, pred_b {b.shape} and truth {t.shape} differ in shape")
    if n_boot < 1 or not 0 < confidence < 1:
        raise ValueError(f"paired_bootstrap: n_boot={n_boot} must be >= 1 and confidence={confidence} in (0, 1)")
    a, b, t = (v.reshape(len(v), -1) for v in (a, b, t))
    names = [f"label{k}" for k in range(t.shape[1])] if label_names is None else list(label_names)
    rng = np.random.default_rng(random_state)
    q = 50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)
    rows = []
    for k, name in enumerate(names):
        ok = np.isfinite(a[:, k]) & np.isfinite(b[:, k]) & np.isfinite(t[:, k])
        ea, eb, tk = (a[ok, k] - t[ok, k]) ** 2, (b[ok, k] - t[ok, k]) ** 2, t[ok, k]
        n = int(ok.sum())
        if n < 2:
            rows.append((name, n) + (np.nan,) * 11)
            continue
        idx = rng.integers(0, n, size=(n_boot, n))
        d = ea[idx].mean(axis=1) - eb[idx].mean(axis=1)
        var = tk[idx].var(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ds = np.where(var > 0, -d / var, np.nan)
        ds = ds[np.isfinite(ds)]
        v0 = np.var(tk)
        rows.append((name, n, float(np.sqrt(ea.mean())), float(np.sqrt(eb.mean())),
                     float(1 - ea.mean() / v0), float(1 - eb.mean() / v0), float(ea.mean() - eb.mean()),
                     *(float(x) for x in np.percentile(d, q)), float((eb.mean() - ea.mean()) / v0),
                     *(float(x) for x in (np.percentile(ds, q) if ds.size else (np.nan, np.nan))),
                     float(np.mean(d < 0))))
    return Table(rows=rows, names=("label", "n", "rms_a", "rms_b", "skill_a", "skill_b", "d_mse", "d_mse_lo",
                                   "d_mse_hi", "d_skill", "d_skill_lo", "d_skill_hi", "frac_a_better"))


@dataclass(frozen=True)
class FloorLaw:
    """A fitted ``sigma(SNR) = sqrt(floor**2 + (a / SNR)**2)`` (:func:`mdslam.relations.floor_law`).

    Attributes
    ----------
    a, floor : float
        Noise coefficient (label unit x SNR) and floor (label unit), both >= 0.
    cov : ndarray, shape (2, 2)
        Covariance of (a, floor) from the fit.
    snr_range : (float, float)
        SNR range of the stars the law was fitted on; outside it the law is an
        extrapolation (:meth:`__call__` flags it).
    """

    a: float
    floor: float
    cov: np.ndarray = field(repr=False)
    snr_range: tuple[float, float]

    @property
    def a_err(self) -> float:
        """1-sigma uncertainty of ``a`` from the fit covariance (label unit x SNR)."""
        return float(np.sqrt(self.cov[0, 0]))

    @property
    def floor_err(self) -> float:
        """1-sigma uncertainty of ``floor`` from the fit covariance (label unit)."""
        return float(np.sqrt(self.cov[1, 1]))

    def __call__(self, snr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sigma, outside)``: the law at ``snr`` and a bool mask of SNR outside ``snr_range``."""
        from .relations import floor_law

        snr = np.asarray(snr, float)
        with np.errstate(invalid="ignore", divide="ignore"):
            sig = floor_law(snr, self.a, self.floor)
        outside = ~((snr >= self.snr_range[0]) & (snr <= self.snr_range[1]))
        return sig, outside


def fit_floor_law(snr: np.ndarray, scatter: np.ndarray, n: np.ndarray | None = None,
                  snr_range: tuple[float, float] | None = None) -> FloorLaw:
    """Fit ``sigma^2 = floor^2 + (a / SNR)^2`` with ``a, floor >= 0`` to binned CV scatter.

    Bounded least squares (:func:`scipy.optimize.curve_fit`, ``bounds=(0, inf)``);
    with ``n`` each bin's scatter is weighted by its standard error
    ``scatter / sqrt(2 n)`` (that of a Gaussian standard deviation).

    Parameters
    ----------
    snr : (n_bins,) array
        Representative SNR of each bin (e.g. ``snr_median`` of
        :func:`binned_bias_scatter`).
    scatter : (n_bins,) array
        CV scatter of each bin (label unit).
    n : (n_bins,) array, optional
        Stars per bin.
    snr_range : (float, float), optional
        SNR range of the stars behind the bins (default: the range of ``snr``).

    Returns
    -------
    FloorLaw

    Raises
    ------
    ValueError
        Fewer than two usable bins.
    """
    x = np.asarray(snr, float)
    y = np.asarray(scatter, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y >= 0)
    if ok.sum() < 2:
        raise ValueError(f"need at least two bins with finite SNR > 0 and scatter to fit the law, got {ok.sum()}")
    sig = None
    if n is not None:
        nn = np.asarray(n, float)[ok]
        sig = np.maximum(y[ok], 1e-12 * max(y[ok].max(), 1e-300)) / np.sqrt(2.0 * np.maximum(nn, 1.0))
    xo, yo = x[ok], y[ok]
    # start: floor from the best-SNR bin, a from the worst
    f0 = float(yo[np.argmax(xo)])
    a0 = float(np.sqrt(max(yo[np.argmin(xo)] ** 2 - f0**2, 0.0)) * xo.min()) or float(yo.mean() * xo.min() * 0.1)

    def model(t, a, floor):
        return np.sqrt(floor**2 + (a / t) ** 2)

    p, cov = curve_fit(model, xo, yo, p0=(a0, f0), sigma=sig, absolute_sigma=False,
                       bounds=([0.0, 0.0], [np.inf, np.inf]), maxfev=20000)
    rng = (float(xo.min()), float(xo.max())) if snr_range is None else (float(snr_range[0]), float(snr_range[1]))
    return FloorLaw(float(p[0]), float(p[1]), np.asarray(cov, float), rng)


def fit_floor_laws(snr: np.ndarray, pred: np.ndarray, truth: np.ndarray, label_names, *,
                   n_bins: int = 5, min_per_bin: int = 20) -> tuple[Table, dict[str, FloorLaw]]:
    """CV scatter in equal-count SNR bins and the :func:`fit_floor_law` of every label.

    Parameters
    ----------
    snr : (n,) array
    pred, truth : (n, n_labels) arrays
        CV and reference labels, physical units.
    label_names : sequence of str
    n_bins, min_per_bin : as for :func:`binned_bias_scatter`.

    Returns
    -------
    (Table, dict)
        The binned table of :func:`binned_bias_scatter` and ``{label: FloorLaw}``,
        each law's ``snr_range`` the SNR range of the binned stars.

    Raises
    ------
    ValueError
        Fewer than two bins of ``min_per_bin`` stars.
    """
    snr = np.asarray(snr, float)
    p = np.asarray(pred, float).reshape(snr.size, -1)
    t = np.asarray(truth, float).reshape(snr.size, -1)
    ok = np.isfinite(snr) & np.all(np.isfinite(p), axis=1) & np.all(np.isfinite(t), axis=1)
    tab = binned_bias_scatter(snr[ok], p[ok], t[ok], n_bins=n_bins, min_per_bin=min_per_bin)
    if len(tab) < 2:
        raise ValueError(f"only {len(tab)} SNR bin(s) with >= {min_per_bin} stars: cannot fit an error law")
    scat = np.asarray(tab["scatter"], float).reshape(len(tab), -1)
    rng = (float(np.min(tab["snr_lo"])), float(np.max(tab["snr_hi"])))
    laws = {name: fit_floor_law(np.asarray(tab["snr_median"], float), scat[:, k], np.asarray(tab["n"]), rng)
            for k, name in enumerate(label_names)}
    return tab, laws


def flag_cuts(flag: np.ndarray, label_names, labels=None) -> dict[str, np.ndarray]:
    """Masks of the stars whose labels a comparison may use, one per flag test, in order.

    Parameters
    ----------
    flag : (n,) int array
        The ``flag`` column of a SLAM label table (bits of :class:`mdslam.flags.LabelFlag`).
    label_names : sequence of str
        The model's labels, in order (label ``k`` outside the training domain
        sets ``LabelFlag.OUTSIDE_DOMAIN << k``).
    labels : sequence of str, optional
        The labels the comparison uses (default: all): only their domain bits count.

    Returns
    -------
    dict
        ``{"fit ok (no failure, converged, SNR, pixels)": mask, "<label> inside the
        training domain": mask, ..., "spectrum described by the model (rchi2)": mask,
        "labels near the training set (k-NN)": mask}``; AND them
        (:func:`mdslam.selection.combine`) or pass them to
        :func:`mdslam.selection.cut_flow` to count what each removes.  The last two
        are the whole-spectrum out-of-domain bits (``BAD_FIT``, ``FAR_FROM_TRAINING``):
        a label can lie inside every label's range and still come from a spectrum the
        model does not describe, or from a corner of label space with no training stars.
    """
    from .flags import LabelFlag

    f = np.asarray(flag).astype(np.int64)
    names = list(label_names)
    basic = int(LabelFlag.FAILED | LabelFlag.NOT_CONVERGED | LabelFlag.LOW_SNR | LabelFlag.FEW_PIXELS)
    out = {"fit ok (no failure, converged, SNR, pixels)": (f & basic) == 0}
    for name in (names if labels is None else list(labels)):
        bit = int(LabelFlag.OUTSIDE_DOMAIN) << names.index(name)
        out[f"{name} inside the training domain"] = (f & bit) == 0
    out["spectrum described by the model (rchi2)"] = (f & int(LabelFlag.BAD_FIT)) == 0
    out["labels near the training set (k-NN)"] = (f & int(LabelFlag.FAR_FROM_TRAINING)) == 0
    return out


# --------------------------------------------------------------------------- #
# comparison statistics ("median +- std" of the papers)
# --------------------------------------------------------------------------- #
MAD_TO_SIGMA = 1.4826
#: Fewest pairs for which a "median +- std" is quoted (:meth:`Comparison.format`).
MIN_N_SCATTER = 5


def robust_std(x: np.ndarray) -> float:
    """Robust scatter ``1.4826 * median(|x - median(x)|)`` of the finite values (NaN if none)."""
    v = np.asarray(x, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))))


@dataclass(frozen=True)
class Comparison:
    """Summary of the differences ``x - y`` between two label sets.

    Attributes
    ----------
    median, mean, std, robust_std : float
        Of ``d = x - y`` in the label's unit; ``std`` with ddof=0, ``robust_std``
        is 1.4826 MAD.
    n : int
        Number of finite pairs.
    """

    median: float
    mean: float
    std: float
    robust_std: float
    n: int

    def as_dict(self) -> dict:
        """The fields as a plain dict."""
        return asdict(self)

    def format(self, fmt: str = ".2f", unit: str = "", min_n: int = MIN_N_SCATTER) -> str:
        """``"median +- std"`` as the papers quote it, e.g. ``"-27 +- 92 K (n=106)"``.

        With fewer than ``min_n`` pairs no scatter is quoted: ``"median -0.08
        (n=2, too few for a scatter)"``; with none, ``"- (n=0)"``.
        """
        u = f" {unit}" if unit else ""
        if self.n == 0:
            return "- (n=0)"
        if self.n < min_n:
            return f"median {self.median:{fmt}}{u} (n={self.n}, too few for a scatter)"
        return f"{self.median:{fmt}} \u00b1 {self.std:{fmt}}{u} (n={self.n})"

    def __str__(self) -> str:
        return self.format(".3g")


def compare(x: np.ndarray, y: np.ndarray) -> Comparison:
    """Median offset, mean, standard deviation and robust scatter of ``x - y``.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Labels to compare (e.g. SLAM and reference), same unit.

    Returns
    -------
    Comparison
        NaN statistics and ``n = 0`` when no finite pair exists.
    """
    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return Comparison(np.nan, np.nan, np.nan, np.nan, 0)
    return Comparison(float(np.median(d)), float(np.mean(d)), float(np.std(d)), robust_std(d), int(d.size))


def compare_groups(groups: dict[str, np.ndarray], pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                   min_n: int = MIN_N_SCATTER) -> Table:
    """:func:`compare` of several differences on the same stars, one row per group of stars.

    The like-with-like table of a comparison with a reference: e.g. SLAM - Mann
    beside APOGEE - Mann and SLAM - APOGEE, each over exactly the same stars of
    each group (a star enters a group's row only if every pair is finite for it).

    Parameters
    ----------
    groups : dict
        Group name -> (n,) bool mask of the stars in the group.
    pairs : dict
        Difference name -> ``(x, y)``, two (n,) arrays in one unit; the statistic is of ``x - y``.
    min_n : int
        Fewer stars than this: the std and robust std are NaN (the median is kept).

    Returns
    -------
    Table
        ``group``, ``n`` and, per difference ``<p>``, ``<p> median``, ``<p> std``
        (ddof=0) and ``<p> robust std`` (1.4826 MAD).
    """
    arrays = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in pairs.items()}
    cols: dict[str, list] = {"group": [], "n": []}
    for name in arrays:
        for s in ("median", "std", "robust std"):
            cols[f"{name} {s}"] = []
    for gname, mask in groups.items():
        use = np.asarray(mask, bool).copy()
        for x, y in arrays.values():
            use &= np.isfinite(x) & np.isfinite(y)
        cols["group"].append(gname)
        cols["n"].append(int(use.sum()))
        for name, (x, y) in arrays.items():
            c = compare(x[use], y[use])
            few = c.n < min_n
            cols[f"{name} median"].append(c.median)
            cols[f"{name} std"].append(np.nan if few else c.std)
            cols[f"{name} robust std"].append(np.nan if few else c.robust_std)
    return Table(cols)


def regression_slope(pred: np.ndarray, truth: np.ndarray) -> float:
    """Least-squares slope of ``pred`` on ``truth`` (``pred = a + b truth``): 1 unbiased, < 1 shrunk.

    A posterior mean regresses towards the prior mean: the slope of the labels
    on the reference labels measures how strongly (about the skill score for
    Gaussian labels and errors).

    Parameters
    ----------
    pred, truth : (n,) arrays
        Predicted and reference labels, one unit; NaN pairs are dropped.

    Returns
    -------
    float
        ``b``; NaN with fewer than 2 finite pairs or a constant ``truth``.
    """
    p = np.asarray(pred, float)
    t = np.asarray(truth, float)
    ok = np.isfinite(p) & np.isfinite(t)
    if ok.sum() < 2:
        return float("nan")
    dt = t[ok] - t[ok].mean()
    var = float(np.sum(dt**2))
    return float(np.sum(dt * (p[ok] - p[ok].mean())) / var) if var > 0 else float("nan")


def binned_medians(x: np.ndarray, dy: np.ndarray, bins: int | np.ndarray = 10,
                   min_count: int = 1) -> Table:
    """Median and scatter of residuals ``dy`` in bins of ``x`` (the error bars of Q25 Figs. 6-8).

    Parameters
    ----------
    x : array_like, shape (n,)
        Binning variable (e.g. the reference label).
    dy : array_like, shape (n,)
        Residuals (e.g. SLAM minus reference).
    bins : int or array_like
        Number of equal-width bins over the finite range of ``x``, or the bin edges.
    min_count : int
        Bins with fewer finite points get NaN statistics (their ``n`` is kept).

    Returns
    -------
    Table
        One row per bin: ``x_lo``, ``x_hi``, ``x_center`` (bin middle), ``x_median``,
        ``n``, ``median``, ``mean``, ``std`` (the papers' error bar), ``robust_std``
        and ``median_err`` (``1.2533 std / sqrt(n)``, the standard error of a median).
    """
    x = np.asarray(x, float)
    dy = np.asarray(dy, float)
    ok = np.isfinite(x) & np.isfinite(dy)
    x, dy = x[ok], dy[ok]
    if np.ndim(bins) == 0:
        if x.size == 0:
            raise ValueError("no finite (x, dy) pairs to bin")
        edges = np.linspace(x.min(), x.max(), int(bins) + 1)
    else:
        edges = np.asarray(bins, float)
    idx = np.digitize(x, edges[1:-1])  # 0..nbins-1, right edge of last bin included
    inside = (x >= edges[0]) & (x <= edges[-1])
    rows = []
    for k in range(len(edges) - 1):
        v = dy[inside & (idx == k)]
        xv = x[inside & (idx == k)]
        n = int(v.size)
        if n >= max(min_count, 1):
            std = float(np.std(v))
            stats = (float(np.median(xv)), n, float(np.median(v)), float(np.mean(v)), std,
                     robust_std(v), 1.2533 * std / np.sqrt(n))
        else:
            stats = (np.nan, n, np.nan, np.nan, np.nan, np.nan, np.nan)
        rows.append((edges[k], edges[k + 1], 0.5 * (edges[k] + edges[k + 1]), *stats))
    return Table(rows=rows, names=("x_lo", "x_hi", "x_center", "x_median", "n", "median", "mean",
                                   "std", "robust_std", "median_err"))


# --------------------------------------------------------------------------- #
# wide binaries (Li 2021 sec. 5.2, Qiu 2025 sec. 4.3.1)
# --------------------------------------------------------------------------- #
def _gauss_pdf(x, mu, sigma):
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (np.sqrt(2 * np.pi) * np.abs(sigma))


def fit_gaussian(values: np.ndarray, bins: int | np.ndarray | None = None
                 ) -> tuple[float, float, np.ndarray]:
    """Least-squares fit of a unit-area Gaussian to the density histogram of ``values``.

    Parameters
    ----------
    values : array_like, shape (n,)
        Sample (NaN dropped); at least 3 finite values.
    bins : int or array_like, optional
        Histogram bins; default ``max(5, min(40, sqrt(n)))`` equal bins over
        ``median +- 4 * robust_std``.

    Returns
    -------
    mu, sigma : float
        Fitted centre and width (same unit as ``values``); ``sigma > 0``.
    cov : ndarray, shape (2, 2)
        Covariance of (mu, sigma) from the fit.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size < 3:
        raise ValueError(f"need at least 3 finite values to fit a Gaussian, got {v.size}")
    med, rs = float(np.median(v)), robust_std(v)
    if not rs > 0:
        rs = float(np.std(v)) or 1.0
    if bins is None:
        nb = int(max(5, min(40, np.sqrt(v.size))))
        bins = np.linspace(med - 4 * rs, med + 4 * rs, nb + 1)
    dens, edges = np.histogram(v, bins=bins, density=False)
    width = np.diff(edges)
    dens = dens / (v.size * width)
    centers = 0.5 * (edges[1:] + edges[:-1])
    p, cov = curve_fit(_gauss_pdf, centers, dens, p0=(med, rs), maxfev=10000)
    return float(p[0]), float(abs(p[1])), cov


@dataclass(frozen=True)
class PairStatistics:
    """Consistency of a label between the two stars of wide binaries.

    Attributes
    ----------
    delta : ndarray, shape (n,)
        ``x1 - x2`` per pair (finite pairs only).
    normalized : ndarray, shape (n,)
        ``(x1 - x2) / sqrt(e1^2 + e2^2)``; a standard normal if the errors are right.
    n : int
        Number of pairs used.
    mean, median, std : float
        Of ``delta`` (label unit).
    norm_std, norm_robust_std : float
        Standard deviation and 1.4826 MAD of ``normalized``.
    mu_fit, sigma_fit : float
        Gaussian fit to the histogram of ``normalized`` (:func:`fit_gaussian`);
        L21 finds sigma ~ 0.8, i.e. over-estimated uncertainties. NaN with < 3 pairs.
    n_outside_3sigma : int
        Pairs with ``|normalized| > 3`` (L21: 2 of 92).
    """

    delta: np.ndarray = field(repr=False)
    normalized: np.ndarray = field(repr=False)
    n: int
    mean: float
    median: float
    std: float
    norm_std: float
    norm_robust_std: float
    mu_fit: float
    sigma_fit: float
    n_outside_3sigma: int


def pair_statistics(x1: np.ndarray, err1: np.ndarray, x2: np.ndarray, err2: np.ndarray,
                    bins: int | np.ndarray | None = None) -> PairStatistics:
    """Differences and uncertainty-normalised differences of binary components (L21 sec. 5.2).

    Parameters
    ----------
    x1, err1 : array_like, shape (n,)
        Label and 1-sigma uncertainty of the primaries (e.g. [M/H] in dex).
    x2, err2 : array_like, shape (n,)
        Same for the secondaries.
    bins : int or array_like, optional
        Histogram bins for the Gaussian fit.

    Returns
    -------
    PairStatistics
    """
    x1, e1, x2, e2 = (np.asarray(a, float) for a in (x1, err1, x2, err2))
    ok = np.isfinite(x1) & np.isfinite(x2) & np.isfinite(e1) & np.isfinite(e2) & ((e1 > 0) | (e2 > 0))
    d = (x1 - x2)[ok]
    z = d / np.sqrt(e1[ok] ** 2 + e2[ok] ** 2)
    n = int(d.size)
    if n == 0:
        return PairStatistics(d, z, 0, *([np.nan] * 7), 0)
    mu, sig = (np.nan, np.nan)
    if n >= 3:
        try:
            mu, sig, _ = fit_gaussian(z, bins)
        except (RuntimeError, ValueError):
            mu, sig = np.nan, np.nan
    return PairStatistics(d, z, n, float(np.mean(d)), float(np.median(d)), float(np.std(d)),
                          float(np.std(z)), robust_std(z), mu, sig, int(np.sum(np.abs(z) > 3)))


# --------------------------------------------------------------------------- #
# open clusters (Li 2021 Table 3)
# --------------------------------------------------------------------------- #
# --------------------------------------------------------------------------- #
# Q25 Fig. 12: the sign of eq. 11 (Niu et al. 2023) on FGK+FGK wide binaries
# --------------------------------------------------------------------------- #
#: How eq. 11's Delta can be applied: not at all, removed (``feh - Delta``, the
#: convention of :func:`mdslam.relations.niu2023_corrected_feh`) or added.
NIU2023_CONVENTIONS: dict[str, int] = {"uncorrected": 0, "feh - Delta (adopted)": -1, "feh + Delta": 1}


def niu2023_pair_differences(teff1: np.ndarray, feh1: np.ndarray, teff2: np.ndarray,
                             feh2: np.ndarray) -> dict[str, np.ndarray]:
    """Primary-minus-secondary [Fe/H] of FGK+FGK pairs under each reading of Q25 eq. 11.

    Parameters
    ----------
    teff1, feh1 : array_like, shape (n,)
        LAMOST Teff (K) and [Fe/H] (dex) of the primaries (Q25 Fig. 12's x-axis).
    teff2, feh2 : array_like, shape (n,)
        The same for the secondaries.

    Returns
    -------
    dict of str -> ndarray, shape (n,)
        One entry per :data:`NIU2023_CONVENTIONS` key: ``[Fe/H]_1 - [Fe/H]_2``
        after ``feh + s * Delta(Teff)`` with the convention's sign ``s``, in dex;
        NaN where a Teff is outside 4000-7000 K (eq. 11 not calibrated there).
    """
    from .relations import niu2023_correction

    t1, t2 = np.asarray(teff1, float), np.asarray(teff2, float)
    f1, f2 = np.asarray(feh1, float), np.asarray(feh2, float)
    d1, d2 = niu2023_correction(t1), niu2023_correction(t2)
    raw = np.where(np.isfinite(d1) & np.isfinite(d2), f1 - f2, np.nan)
    return {name: raw + s * (d1 - d2) for name, s in NIU2023_CONVENTIONS.items()}


def niu2023_sign_test(teff1: np.ndarray, feh1: np.ndarray, teff2: np.ndarray, feh2: np.ndarray,
                      bins: int | np.ndarray | None = None) -> Table:
    """Which sign of Q25 eq. 11 makes the pair [Fe/H] difference flat in Teff (Q25 Fig. 12).

    The two stars of a wide binary share one [Fe/H]; a Teff-dependent bias of
    the survey shows as a trend of ``[Fe/H]_1 - [Fe/H]_2`` with the primary's
    Teff. Q25 (appendix, Fig. 12) find that the correction makes the difference
    "independent of Teff" and "converge to zero" on 4,078 LAMOST DR11 pairs;
    this measures each reading of the correction on the same footing.

    Parameters
    ----------
    teff1, feh1, teff2, feh2 : array_like, shape (n,)
        As in :func:`niu2023_pair_differences` (K, dex).
    bins : int or array_like, optional
        Primary-Teff bins (K) for the binned medians (:func:`binned_medians`);
        default 500 K wide from 4000 to 7000 K.

    Returns
    -------
    astropy.table.Table
        One row per convention: ``convention``, ``n`` (pairs with both Teff in
        4000-7000 K), ``median`` and ``std`` of the difference (dex),
        ``slope`` (dex per 1000 K, least squares of the difference on the
        primary's Teff) and ``binned_spread`` (dex: the standard deviation of
        the binned medians with at least 5 pairs; 0 for a flat relation).
    """
    diffs = niu2023_pair_differences(teff1, feh1, teff2, feh2)
    t1 = np.asarray(teff1, float)
    bins = np.arange(4000.0, 7001.0, 500.0) if bins is None else bins
    rows = []
    for name, d in diffs.items():
        ok = np.isfinite(d) & np.isfinite(t1)
        n = int(ok.sum())
        slope = float(np.polyfit(t1[ok] / 1000.0, d[ok], 1)[0]) if n >= 2 else np.nan
        spread = np.nan
        if n:
            med = binned_medians(t1[ok], d[ok], bins=bins, min_count=5)["median"]
            med = np.asarray(med, float)[np.isfinite(med)]
            spread = float(np.std(med)) if med.size >= 2 else np.nan
        rows.append((name, n, float(np.median(d[ok])) if n else np.nan,
                     float(np.std(d[ok])) if n else np.nan, slope, spread))
    out = Table(rows=rows, names=("convention", "n", "median", "std", "slope", "binned_spread"))
    for c, u in (("median", "dex"), ("std", "dex"), ("binned_spread", "dex")):
        out[c].unit = u
    return out


def _cluster_key(name: str) -> str:
    """'Melotte_22', ' melotte 22 ' -> 'MELOTTE 22' (OCCAM member and cluster tables differ)."""
    return " ".join(str(name).replace("_", " ").split()).upper()


def cluster_statistics(cluster: np.ndarray, feh: np.ndarray, feh_lit: np.ndarray,
                       min_n: int = 1, cluster_values: dict[str, float] | None = None) -> Table:
    """Per-cluster mean +- std of a metallicity and of its literature value (L21 Table 3 layout).

    Parameters
    ----------
    cluster : array_like of str, shape (n,)
        Cluster name of each member star (stripped before grouping).
    feh : array_like, shape (n,)
        Metallicity of each member from this work (dex).
    feh_lit : array_like, shape (n,)
        Literature metallicity of the same stars (e.g. OCCAM ASPCAP [Fe/H]), dex.
    min_n : int
        Keep clusters with at least this many stars with finite ``feh`` and ``feh_lit``.
    cluster_values : dict, optional
        ``{cluster name: literature cluster [Fe/H]}`` (e.g. the OCCAM cluster table);
        names match whatever their spaces, underscores and case. Adds ``cluster_lit``
        (NaN for clusters not in the mapping) and ``mean_minus_cluster``
        (``mean - cluster_lit``).

    Returns
    -------
    Table
        Sorted by cluster name; columns ``cluster``, ``n``, ``mean``, ``std``,
        ``mean_lit``, ``std_lit``, ``mean_diff``, ``std_diff`` (of ``feh - feh_lit``),
        plus ``cluster_lit`` and ``mean_minus_cluster`` with ``cluster_values``.
        Standard deviations use ddof=0 and are NaN for a single star (L21 prints
        no error there).
    """
    names = np.char.strip(np.asarray(cluster).astype(str))
    f = np.asarray(feh, float)
    fl = np.asarray(feh_lit, float)
    ok = np.isfinite(f) & np.isfinite(fl)
    rows = []
    for name in sorted(set(names[ok].tolist())):
        m = ok & (names == name)
        n = int(m.sum())
        if n < max(min_n, 1):
            continue

        def sd(v):
            return float(np.std(v)) if v.size > 1 else np.nan

        d = f[m] - fl[m]
        rows.append((name, n, float(np.mean(f[m])), sd(f[m]), float(np.mean(fl[m])), sd(fl[m]),
                     float(np.mean(d)), sd(d)))
    names_out = ("cluster", "n", "mean", "std", "mean_lit", "std_lit", "mean_diff", "std_diff")
    if not rows:
        out = Table(names=names_out, dtype=(str, int, float, float, float, float, float, float))
    else:
        out = Table(rows=rows, names=names_out)
    if cluster_values is not None:
        lit = {_cluster_key(k): float(v) for k, v in cluster_values.items()}
        out["cluster_lit"] = np.array([lit.get(_cluster_key(c), np.nan) for c in out["cluster"]], float)
        out["mean_minus_cluster"] = np.asarray(out["mean"], float) - out["cluster_lit"]
    return out


#: The SLAM estimators of :func:`compare_estimators`: short key -> prediction-time parameters.
ESTIMATORS = {
    "ml": {"prior": None},
    "post_flat": {"prior": "flat", "chi2_scale": 1.0},
    "post_training": {"prior": "training", "chi2_scale": 1.0},
    "post_training_s3": {"prior": "training", "chi2_scale": 3.0},
    "post_training_s10": {"prior": "training", "chi2_scale": 10.0},
    "post_training_cv": {"prior": "training", "chi2_scale": "cv"},
    "cor_ml": {"likelihood": "correlated", "prior": None},
    "cor_post_cv": {"likelihood": "correlated", "prior": "training", "chi2_scale": "cv"},
    "cor_ml_label_rank": {"likelihood": "correlated", "prior": None, "noise_rank": "label_cv"},
}

#: Candidate factor ranks of the per-label rank choice (:func:`label_rank_predict`).
LABEL_RANKS = (0, 10, 20, 40, 80)

#: Titles of the estimators and baselines of :func:`compare_estimators` for tables.
ESTIMATOR_TITLES = {
    "ml": "SLAM, LM maximum likelihood (Li eq. 3)",
    "post_flat": "SLAM, posterior mean, flat prior",
    "post_training": "SLAM, posterior mean, training prior",
    "post_training_s3": "same, chi2 / 3",
    "post_training_s10": "same, chi2 / 10",
    "post_training_cv": "same, chi2 scale chosen by CV inside the fold (headline)",
    "cor_ml": "SLAM, correlated-pixel likelihood, maximum likelihood",
    "cor_post_cv": "same, posterior mean, training prior, chi2 scale chosen by CV",
    "cor_ml_label_rank": "same, maximum likelihood, noise-model rank chosen per label by CV label error",
    "pca_ridge": "PCA(20) + ridge regression (baseline)",
    "cannon_like": "Cannon-like quadratic model (baseline)",
}


def default_baselines() -> dict:
    """The baselines of :func:`compare_estimators`: ``pca_ridge`` and ``cannon_like`` (:mod:`mdslam.baselines`)."""
    from .baselines import CannonLike, PCARidge

    return {"pca_ridge": PCARidge(n_components=20), "cannon_like": CannonLike()}


def estimator_fold(flux: np.ndarray, y: np.ndarray, ivar: np.ndarray | None, train: np.ndarray,
                   test: np.ndarray, *, label_names: list[str], slam_params: dict | None = None,
                   estimators: dict[str, dict] | None = None, baselines: dict | None = None,
                   random_state: int = 0) -> tuple[dict, dict]:
    """One outer fold of :func:`compare_estimators`: every estimator fitted on ``train``, labels of ``test``.

    One SLAM model is fitted to the training part with ``prior="training"`` and
    ``chi2_scale="cv"``: its per-pixel hyperparameters (grid search) and its
    chi2 scale are chosen by CV inside the training part only (``slam_params["cv"]``
    inner folds). Every SLAM estimator labels the test part with its own
    prediction-time parameters; every baseline is refitted on the training part.

    Parameters
    ----------
    flux, ivar : (n_star, n_pix) arrays
    y : (n_star, n_label) array, physical units.
    train, test : int arrays
        Row indices of the fold.
    label_names : list of str
    slam_params, estimators, baselines, random_state : as for :func:`compare_estimators`.

    Returns
    -------
    pred : dict
        Key -> ``(labels, errors)``, each (n_test, n_label); errors are the
        posterior standard deviations of posterior estimators, None otherwise.
    info : dict
        ``chi2_scale`` (the CV choice), ``edge`` (the model's ``grid_edge_fraction_``)
        and ``model`` (the SLAM model fitted on the training part).
    """
    from .slam import SLAM

    iv = None if ivar is None else ivar[train]
    params = {"random_state": random_state, **(slam_params or {}), "prior": "training", "chi2_scale": "cv"}
    model = SLAM(**params).fit(flux[train], y[train], iv, label_names=label_names)
    info = {"chi2_scale": float(model.chi2_scale_), "edge": dict(model.grid_edge_fraction_), "model": model}
    return label_fold(model, flux, y, ivar, train, test, label_names=label_names, estimators=estimators,
                      baselines=baselines), info


def label_fold(model, flux: np.ndarray, y: np.ndarray, ivar: np.ndarray | None, train: np.ndarray,
               test: np.ndarray, *, label_names: list[str], estimators: dict[str, dict] | None = None,
               baselines: dict | None = None) -> dict:
    """The held-out labels of one fold: every SLAM estimator of a fitted ``model``, every baseline refitted.

    Parameters
    ----------
    model : SLAM
        Fitted on the training part ``train`` (any way: grid search, or
        :func:`mdslam.slam.fixed.fit_fixed` at stored hyperparameters). Its
        prior and chi2 scale are changed by ``set_params`` for each estimator;
        an estimator with another ``likelihood`` uses the model's twin at the
        same per-pixel hyperparameters (:func:`likelihood_model`).
    flux, ivar : (n_star, n_pix) arrays
    y : (n_star, n_label) array, physical units.
    train, test : int arrays
        Row indices of the fold (``train`` fits the baselines).
    label_names : list of str
    estimators, baselines : as for :func:`compare_estimators`.

    Returns
    -------
    dict
        Key -> ``(labels, errors)``, each (n_test, n_label); errors are the
        posterior standard deviations of posterior estimators, None otherwise.
    """
    iv = (lambda idx: None) if ivar is None else (lambda idx: ivar[idx])
    pred, twins = {}, {}
    for key, over in (ESTIMATORS if estimators is None else estimators).items():
        over = dict(over)
        m = likelihood_model(model, over.pop("likelihood", None), flux[train], y[train], iv(train), twins)
        if over.pop("noise_rank", None) == "label_cv":
            lab, _ = label_rank_predict(m, flux[train], y[train], iv(train), flux[test], iv(test))
            pred[key] = (lab, None)
            continue
        t = m.set_params(**over).predict_table(flux[test], iv(test))
        lab = np.column_stack([np.asarray(t[c], float) for c in label_names])
        err = (np.column_stack([np.asarray(t[f"e_{c}"], float) for c in label_names])
               if over.get("prior") is not None else None)
        pred[key] = (lab, err)
    for key, est in (default_baselines() if baselines is None else baselines).items():
        pred[key] = (np.asarray(est.fit(flux[train], y[train], iv(train)).predict(flux[test], iv(test)),
                                float).reshape(len(test), -1), None)
    return pred


def likelihood_model(model, likelihood: str | None, flux: np.ndarray, y: np.ndarray, ivar: np.ndarray | None,
                     twins: dict):
    """``model``, or its twin refitted at the same per-pixel hyperparameters with another ``likelihood``.

    The twin (:func:`mdslam.slam.fit_fixed`, no grid search) gets the
    training prior and the CV-chosen chi2 scale; its noise model
    (:mod:`mdslam.slam.noise`) comes from ``model.cv``-fold refits on the
    same training stars. It is made once per likelihood and kept in ``twins``.

    Parameters
    ----------
    model : SLAM
        Fitted on (flux, y, ivar).
    likelihood : str or None
        None or the model's own: ``model`` itself.
    flux, ivar : (n_train, n_pix) arrays
    y : (n_train, n_label) array
    twins : dict
        Cache, likelihood -> fitted twin.

    Returns
    -------
    SLAM
    """
    from sklearn.base import clone

    from .slam import fit_fixed

    if likelihood is None or likelihood == model.likelihood:
        return model
    if likelihood not in twins:
        hyper = {"C": model.C_, "epsilon": model.epsilon_, "gamma": model.gamma_, "usable": model.pixel_usable_,
                 "cv_mse_scaled": model.cv_mse_scaled_, "cv_md_scaled": model.cv_md_scaled_}
        twin = clone(model).set_params(likelihood=likelihood, prior="training", chi2_scale="cv")
        twins[likelihood] = fit_fixed(twin, flux, y, ivar, hyper, wavelength=model.wavelength_,
                                      label_names=model.label_names_, label_units=model.label_units_)
    return twins[likelihood]


def label_rank_predict(model, flux: np.ndarray, y: np.ndarray, ivar: np.ndarray | None, flux_new: np.ndarray,
                       ivar_new: np.ndarray | None, ranks=LABEL_RANKS) -> tuple[np.ndarray, dict]:
    """Maximum-likelihood labels of new spectra, each label's noise-model rank chosen by CV label error.

    The factor model of the correlated likelihood (:mod:`mdslam.slam.noise`)
    is fitted to the CV residuals of ``model.cv`` refits on the training
    stars (the folds of :func:`mdslam.slam.fixed.fit_fixed`); its rank is
    chosen there by held-out log-likelihood of the residuals. Here, for each
    candidate rank, each fold's refit labels its held-out training stars
    with the factor model of the other folds' residuals, and each label takes
    the rank of lowest CV mean squared label error (the lowest rank on a
    tie); the new spectra are labelled once per chosen rank with the factor
    model of all residuals.

    Parameters
    ----------
    model : SLAM
        Fitted with ``likelihood="correlated"`` on (flux, y, ivar).
    flux, ivar : (n_train, n_pix) arrays
    y : (n_train, n_label) array, physical units.
    flux_new, ivar_new : (m, n_pix) arrays
        The spectra to label.
    ranks : sequence of int
        Candidate ranks.

    Returns
    -------
    labels : (m, n_label) array
        Physical units, label ``l`` from the fit at its chosen rank.
    info : dict
        ``ranks``, ``rms`` ((n_ranks, n_label) CV label RMS on the training
        stars, physical units) and ``rank`` (the chosen rank of each label).
    """
    import copy

    from .slam import inputs, noise
    from .slam.cv import refit_fixed
    from .slam.training import _iter_folds

    fl, labels, good = inputs.check_training(flux, y, ivar)
    folds = _iter_folds(len(labels), model.cv, model.random_state)
    subs = [(refit_fixed(model, fl[tr], labels[tr], good[tr]), te) for tr, te in folds]
    R = np.zeros_like(fl)
    for sub, te in subs:
        R[te] = np.where(good[te], fl[te] - sub.predict_flux(labels[te]), 0.0)
    R[:, ~model.pixel_usable_] = 0.0
    rs = int(model.random_state or 0)
    iv = (lambda idx: None) if ivar is None else (lambda idx: np.asarray(ivar)[idx])

    def with_noise(m, rows, k):
        m = copy.copy(m)
        V, d = noise.factor_model(R[rows], k, rs)
        m.noise_factor_, m.noise_diag_ = V, np.where(m.pixel_usable_, d, np.inf)
        m._reset_cache()
        return m.set_params(prior=None)

    def values(t):
        return np.column_stack([np.asarray(t[c], float) for c in model.label_names_])

    inner = np.full((len(ranks), len(labels), labels.shape[1]), np.nan)
    for j, k in enumerate(ranks):
        for (tr, _), (sub, te) in zip(folds, subs, strict=True):
            inner[j, te] = values(with_noise(sub, tr, k).predict_table(np.asarray(flux)[te], iv(te)))
    rms = np.sqrt(np.nanmean((inner - labels[None]) ** 2, axis=1))
    pick = np.argmin(rms, axis=0)
    out = np.full((len(flux_new), labels.shape[1]), np.nan)
    everyone = np.arange(len(labels))
    for j in np.unique(pick):
        out[:, pick == j] = values(with_noise(model, everyone, ranks[j]).predict_table(flux_new, ivar_new))[:, pick == j]
    return out, {"ranks": np.asarray(ranks, int), "rms": rms, "rank": np.asarray(ranks, int)[pick]}


def estimator_summary(table: Table, label_names: list[str], keys: list[str] | None = None) -> Table:
    """Per estimator and label: RMS, label spread, skill and normalised width from a per-star CV table.

    Parameters
    ----------
    table : Table
        :func:`compare_estimators` ``(..., per_star=True)`` output: ``<label>_true``,
        ``<key>_<label>`` and, for posterior estimators, ``e_<key>_<label>``.
    label_names : list of str
    keys : list of str, optional
        Estimators to summarise (default: ``table.meta["estimators"]``).

    Returns
    -------
    Table, one row per estimator: ``estimator`` (key), ``title``, per label
    ``rms_<label>`` (label units), ``spread_<label>`` (standard deviation of the
    reference labels), ``skill_<label>`` (``1 - MSE / Var(labels)``) and
    ``zwidth_<label>`` (standard deviation of ``(label - truth) / e_label``,
    NaN without errors).
    """
    keys = list(table.meta["estimators"] if keys is None else keys)
    rows = []
    for key in keys:
        row = [key, ESTIMATOR_TITLES.get(key, key)]
        for name in label_names:
            truth = np.asarray(table[f"{name}_true"], float)
            p = np.asarray(table[f"{key}_{name}"], float)
            ok = np.isfinite(p) & np.isfinite(truth)
            mse = np.mean((p[ok] - truth[ok]) ** 2)
            var = np.var(truth[ok])
            z = np.full(p.shape, np.nan)
            if f"e_{key}_{name}" in table.colnames:
                with np.errstate(invalid="ignore", divide="ignore"):
                    z = (p - truth) / np.asarray(table[f"e_{key}_{name}"], float)
            z = z[np.isfinite(z)]
            row += [float(np.sqrt(mse)), float(np.sqrt(var)), float(1.0 - mse / var),
                    float(np.std(z)) if z.size > 2 else float("nan")]
        rows.append(row)
    cols = ["estimator", "title"] + [f"{s}_{nm}" for nm in label_names for s in ("rms", "spread", "skill", "zwidth")]
    return Table(rows=rows, names=cols)


def compare_estimators(flux: np.ndarray, labels: np.ndarray, ivar: np.ndarray | None = None, *,
                       label_names: list[str] | None = None, cv: int = 5, random_state: int = 0,
                       slam_params: dict | None = None, estimators: dict[str, dict] | None = None,
                       baselines: dict | None = None, folds=None, per_star: bool = False,
                       models: list | None = None) -> Table:
    """Nested k-fold CV of SLAM's label estimators (Li 2021 eqs. 2-3) and baselines, on the same folds.

    In each outer fold (:func:`estimator_fold`) one SLAM model is fitted to the
    training part, its hyperparameters and chi2 scale chosen by CV inside that
    part only; every SLAM estimator and every baseline labels the held-out part.

    Parameters
    ----------
    flux, ivar : (n_star, n_pix) arrays
        Normalised spectra and inverse variances.
    labels : (n_star, n_label) array
        Reference labels (physical units).
    label_names : list of str, optional
    cv, random_state : int
        Number of outer folds and seed of their shuffle (:func:`mdslam.baselines.kfold`).
    slam_params : dict, optional
        Further :class:`mdslam.slam.SLAM` parameters (the grid, the inner ``cv``).
    estimators : dict, optional
        Key -> SLAM prediction-time parameters; default :data:`ESTIMATORS`.
    baselines : dict, optional
        Key -> estimator with ``fit(flux, y, ivar)`` / ``predict(flux, ivar)``;
        default :func:`default_baselines` (``{}``: none).
    folds : sequence of (train, test), optional
        Explicit outer folds (default: ``kfold(n, cv, random_state)``).
    per_star : bool
        Return the per-star table instead of the summary.
    models : list, optional
        If given, each outer fold's fitted SLAM model is appended to it.

    Returns
    -------
    Table
        The summary of :func:`estimator_summary`, or with ``per_star`` one row
        per star: ``fold``, ``<label>_true``, ``<key>_<label>`` and
        ``e_<key>_<label>`` (posterior estimators), :func:`estimator_cv_table`.
        ``meta`` holds the folds' chosen chi2 scales and grid-edge fractions
        and the CV setup.
    """
    from .baselines import kfold

    flux = np.asarray(flux, float)
    y = np.array(labels, float, ndmin=2)
    n, L = y.shape
    names = list(label_names) if label_names is not None else [f"label{k}" for k in range(L)]
    folds = kfold(n, cv, random_state) if folds is None else list(folds)
    results = []
    for tr, te in folds:
        pred, info = estimator_fold(flux, y, ivar, tr, te, label_names=names, slam_params=slam_params,
                                    estimators=estimators, baselines=baselines, random_state=random_state)
        if models is not None:
            models.append(info["model"])
        results.append((pred, info))
    out = estimator_cv_table(y, names, folds, results, random_state)
    return out if per_star else _with_meta(estimator_summary(out, names), out.meta)


def estimator_cv_table(y: np.ndarray, label_names: list[str], folds, results, random_state: int = 0) -> Table:
    """The per-star table of :func:`compare_estimators` from its outer folds' :func:`estimator_fold` results.

    Parameters
    ----------
    y : (n_star, n_label) array
        Reference labels.
    label_names : list of str
    folds : sequence of (train, test) index arrays
    results : sequence of (pred, info)
        :func:`estimator_fold` output of each fold, in the order of ``folds``.
    random_state : int
        Recorded in ``meta``.

    Returns
    -------
    Table
        ``fold``, ``<label>_true``, ``<key>_<label>``, ``e_<key>_<label>``; ``meta``
        ``cv``, ``random_state``, ``n``, ``estimators``, ``chi2_scale_per_fold``,
        ``grid_edge_fraction_per_fold``.
    """
    y = np.array(y, float, ndmin=2)
    out = Table()
    out["fold"] = np.full(len(y), -1)
    for name, col in zip(label_names, y.T, strict=True):
        out[f"{name}_true"] = col
    for k, ((_, te), (pred, _)) in enumerate(zip(folds, results, strict=True)):
        out["fold"][te] = k
        _put_fold(out, pred, te, label_names)
    out.meta.update({"cv": len(folds), "random_state": random_state, "n": len(y),
                     "estimators": list(results[0][0]) if results else [],
                     "chi2_scale_per_fold": [float(info["chi2_scale"]) for _, info in results],
                     "grid_edge_fraction_per_fold": [{k: float(v) for k, v in info["edge"].items()}
                                                     for _, info in results]})
    return out


def _put_fold(out: Table, pred: dict, test: np.ndarray, names: list[str]) -> None:
    """Write one fold's ``(labels, errors)`` per estimator into the per-star table (NaN-initialised columns)."""
    for key, (lab, err) in pred.items():
        for li, name in enumerate(names):
            for col, val in ((f"{key}_{name}", lab), (f"e_{key}_{name}", err)):
                if val is None:
                    continue
                if col not in out.colnames:
                    out[col] = np.full(len(out), np.nan)
                out[col][test] = val[:, li]


def _with_meta(table: Table, meta: dict) -> Table:
    """``table`` with ``meta`` added."""
    table.meta.update(meta)
    return table
