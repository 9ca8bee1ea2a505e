"""Validation statistics: CV bias/scatter vs SNR, comparison statistics, pairs, clusters.

Qiu et al. 2025 eqs. 4-5 (CV bias and CV scatter; eq. 5 is read as the
standard deviation ``sqrt(mean((theta_SLAM - theta)^2))``, the printed 1/m
outside the root is a slip), the equal-count SNR bins of their Fig. 5 and the
power-law fits of eqs. 6-8; the "median +- standard deviation" comparisons of
both papers (:func:`compare`, :func:`binned_medians`), the wide-binary
consistency test of Li et al. 2021 sec. 5.2 (:func:`pair_statistics`) and the
open-cluster table of Li et al. 2021 Table 3 (:func:`cluster_statistics`).

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
    "robust_std",
    "Comparison",
    "compare",
    "binned_medians",
    "fit_gaussian",
    "PairStatistics",
    "pair_statistics",
    "cluster_statistics",
    "ESTIMATORS",
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


# --------------------------------------------------------------------------- #
# comparison statistics ("median +- std" of the papers)
# --------------------------------------------------------------------------- #
MAD_TO_SIGMA = 1.4826


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

    def format(self, fmt: str = ".2f", unit: str = "") -> str:
        """``"median +- std"`` as the papers quote it, e.g. ``"-27 +- 92 K"``."""
        u = f" {unit}" if unit else ""
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


#: The estimators of :func:`compare_estimators`: name -> SLAM prediction-time parameters.
ESTIMATORS = {
    "LM maximum likelihood (Li eq. 3)": {"prior": None},
    "posterior mean, flat prior": {"prior": "flat", "chi2_scale": 1.0},
    "posterior mean, training prior": {"prior": "training", "chi2_scale": 1.0},
    "same, chi2 / 3": {"prior": "training", "chi2_scale": 3.0},
    "same, chi2 / 10": {"prior": "training", "chi2_scale": 10.0},
    "same, chi2 scale chosen by CV in fit (headline)": {"prior": "training", "chi2_scale": "cv"},
}


def compare_estimators(flux: np.ndarray, labels: np.ndarray, ivar: np.ndarray | None = None, *,
                       label_names: list[str] | None = None, cv: int = 5, random_state: int = 0,
                       slam_params: dict | None = None, estimators: dict[str, dict] | None = None,
                       n_pca: int | None = 20) -> Table:
    """k-fold CV error of SLAM's label estimators (Li 2021 eqs. 2-3) and a PCA + ridge baseline.

    The same shuffled folds serve every estimator.  In each fold one SLAM
    model is fitted to the training part, with ``prior="training"`` and
    ``chi2_scale="cv"`` (its hyperparameters and chi2 scale are chosen by CV
    inside that training part only); every estimator then labels the held-out
    part with its own prediction-time parameters (``set_params``).

    Parameters
    ----------
    flux, ivar : (n_star, n_pix) arrays
        Normalised spectra and inverse variances.
    labels : (n_star, n_label) array
        Reference labels (physical units).
    label_names : list of str, optional
    cv, random_state : int
        Number of folds and seed of their shuffle.
    slam_params : dict, optional
        Further :class:`mdslam.slam.SLAM` parameters (e.g. the hyperparameter grid,
        the inner ``cv``).
    estimators : dict, optional
        Name -> prediction-time parameters; default :data:`ESTIMATORS`.
    n_pca : int or None
        Components of the PCA + ridge baseline (None: no baseline).

    Returns
    -------
    Table, one row per estimator: ``estimator``, and per label ``rms_<label>``
    (label units), ``skill_<label>`` (``1 - MSE / Var(labels)``) and
    ``zwidth_<label>`` (standard deviation of ``(label - truth) / e_label``
    for posterior estimators, NaN otherwise; the CV calibration of the
    posterior std applies to ``chi2_scale="cv"`` only, so rows with a fixed
    scale show the uncalibrated width).  ``meta`` holds the folds' chosen chi2
    scales and the CV setup.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .slam import SLAM

    flux = np.asarray(flux, float)
    y = np.array(labels, float, ndmin=2)
    n, L = y.shape
    names = list(label_names) if label_names is not None else [f"label{k}" for k in range(L)]
    estimators = dict(ESTIMATORS if estimators is None else estimators)
    pred = {k: np.full((n, L), np.nan) for k in estimators}
    err = {k: np.full((n, L), np.nan) for k in estimators}
    base = np.full((n, L), np.nan)
    scales = []
    folds = KFold(cv, shuffle=True, random_state=random_state).split(np.zeros((n, 1)))
    for tr, te in folds:
        params = {"random_state": random_state, **(slam_params or {}), "prior": "training", "chi2_scale": "cv"}
        model = SLAM(**params).fit(flux[tr], y[tr], None if ivar is None else ivar[tr], label_names=names)
        scales.append(model.chi2_scale_)
        for key, over in estimators.items():
            t = model.set_params(**over).predict_table(flux[te], None if ivar is None else ivar[te])
            pred[key][te] = np.column_stack([np.asarray(t[c], float) for c in names])
            if over.get("prior") is not None:
                err[key][te] = np.column_stack([np.asarray(t[f"e_{c}"], float) for c in names])
        if n_pca:
            Xtr = np.where(np.isfinite(flux[tr]), flux[tr], np.nan)
            fill = np.nanmean(Xtr, axis=0)
            fill = np.where(np.isfinite(fill), fill, 0.0)
            pipe = make_pipeline(StandardScaler(), PCA(n_components=min(n_pca, len(tr) - 1)),
                                 RidgeCV(alphas=np.logspace(-3, 3, 13)))
            pipe.fit(np.where(np.isfinite(Xtr), Xtr, fill), y[tr])
            Xte = flux[te]
            base[te] = pipe.predict(np.where(np.isfinite(Xte), Xte, fill)).reshape(-1, L)
    var = y.var(axis=0)
    rows = []
    items = list(pred.items()) + ([(f"PCA({n_pca}) + ridge regression (baseline)", base)] if n_pca else [])
    for key, p in items:
        row = [key]
        with np.errstate(invalid="ignore", divide="ignore"):
            mse = np.nanmean((p - y) ** 2, axis=0)
            z = (p - y) / err[key] if key in err else np.full_like(p, np.nan)
        for li in range(L):
            zl = z[:, li][np.isfinite(z[:, li])]
            row += [float(np.sqrt(mse[li])), float(1.0 - mse[li] / var[li]),
                    float(np.std(zl)) if zl.size > 2 else float("nan")]
        rows.append(row)
    cols = ["estimator"] + [f"{s}_{nm}" for nm in names for s in ("rms", "skill", "zwidth")]
    out = Table(rows=rows, names=cols)
    out.meta.update({"cv": cv, "random_state": random_state, "n": n, "chi2_scale_per_fold": scales})
    return out
