"""Input checks, as small pure functions: labels, hyperparameters, spectra, grids and fit quality.

Each function either returns what it found (a mask, a count, a problem string)
or raises :class:`InputError` -- a :class:`ValueError` whose one-line message
names the file or option and the problem. The estimator, the readers and the
command line call these functions, so the rules live in one place:

* :data:`PLAUSIBLE_RANGES` -- the physically plausible range of each known
  label name, in the units the project uses (Teff in K, log g in dex,
  abundances in dex). A training label outside it is an error (it is a unit
  mistake or an unflagged sentinel, not a star).
* :data:`SENTINELS` -- the "no value" codes of survey catalogues (-9999,
  -999, 9999...). Training rows holding one are excluded with a warning that
  gives the count.
* :data:`GRID_TOLERANCE` -- how far (in pixels) a spectrum's wavelength grid
  may be from the model's before the spectrum is refused.
* :data:`FLUX_LEVEL_RANGE` -- the accepted ratio of a spectrum's median flux to
  the model's median training flux (normalised spectra are near 1).
* :func:`rchi2_threshold` and :func:`knn_threshold` -- thresholds of the
  "bad fit" and "far from the training set" label flags, learnt from the
  training set and stored in the model file. The rchi2 threshold comes from
  the training spectra fitted by the model itself (in-sample, so slightly
  optimistic). On mock LAMOST M dwarfs (model trained on Teff 3000-3700 K,
  [M/H] -0.6..+0.3, SNR ~100) the two flags together marked 83 of 100 stars
  outside that range (all with [M/H] < -0.8 or Teff < 2900 K, 37 % of those
  at 3740-3830 K) and 5 of 100 inside it
  (``tests/test_train_cli.py::test_fit_flags_find_mock_stars_outside_the_training_domain``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .svr import squared_distances

__all__ = [
    "InputError",
    "PLAUSIBLE_RANGES",
    "SENTINELS",
    "GRID_TOLERANCE",
    "FLUX_LEVEL_RANGE",
    "EPSILON_MAX",
    "RCHI2_QUANTILE",
    "RCHI2_FACTOR",
    "RCHI2_FLOOR",
    "KNN_K",
    "KNN_QUANTILE",
    "KNN_FACTOR",
    "plausible_range",
    "parse_floats",
    "label_values",
    "check_hyperparameters",
    "check_cv",
    "check_training_labels",
    "check_training_ivar",
    "check_unique_ids",
    "check_same_grid",
    "grid_problem",
    "require_grid",
    "flux_level_problem",
    "row_nanmedian",
    "rchi2_threshold",
    "knn_distance",
    "knn_threshold",
    "training_rows",
    "fit_flags",
]

log = logging.getLogger("mdslam")


class InputError(ValueError):
    """Input that cannot be used; the one-line message names the file/option and the problem."""


#: Plausible range ``(low, high)`` of each known label, in K (Teff) or dex.
#: Keys are lower-case names with ``[``, ``]``, ``/`` removed (see :func:`plausible_range`).
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "teff": (2000.0, 10000.0),
    "logg": (-1.0, 6.0),
    "fe_h": (-5.0, 1.5),
    "feh": (-5.0, 1.5),
    "m_h": (-5.0, 1.5),
    "mh": (-5.0, 1.5),
    "alpha_m": (-1.0, 1.5),
    "alpha_fe": (-1.0, 1.5),
}

#: Catalogue codes for "no value"; training rows holding one are excluded. -99 is not
#: among them: it is a plausible value of some labels (a radial velocity in km/s).
SENTINELS: tuple[float, ...] = (-9999.0, -999.0, 9999.0, -99999.0, 99999.0)

#: Largest allowed distance between a spectrum's wavelength grid and the model's,
#: in units of the model's local pixel width (0.1 pixel).
GRID_TOLERANCE = 0.1

#: Accepted range of median(flux) / median(model training flux): a normalised
#: spectrum (continuum ~1) is near 1; flux in physical units (1e-17 erg/s/cm2/A)
#: or multiplied by 1000 is far outside.
FLUX_LEVEL_RANGE = (0.2, 5.0)

#: Largest allowed epsilon (standardised flux: the training flux of each pixel has
#: unit variance, so a tube wider than a few units holds every star and the SVR is flat).
EPSILON_MAX = 5.0

#: The bad-fit threshold is ``max(RCHI2_FLOOR, RCHI2_FACTOR * quantile(rchi2_train, RCHI2_QUANTILE))``.
RCHI2_QUANTILE = 0.99
RCHI2_FACTOR = 1.0
RCHI2_FLOOR = 2.0

#: The far-from-training threshold is ``KNN_FACTOR * quantile(d_k, KNN_QUANTILE)`` where
#: ``d_k`` is each training star's distance to its ``KNN_K``-th nearest other training
#: star in standardised labels.
KNN_K = 5
KNN_QUANTILE = 0.99
KNN_FACTOR = 1.0


def plausible_range(name: str) -> tuple[float, float] | None:
    """Plausible ``(low, high)`` of a label by name (``teff``, ``[Fe/H]``, ``logg``...), or None.

    Parameters
    ----------
    name : str
        Label name; case, brackets and ``/`` are ignored (``[Fe/H]`` -> ``fe_h``).
    """
    raw = str(name).strip().lower()
    k = raw.replace("[", "").replace("]", "").replace("/", "_").replace(" ", "")
    return PLAUSIBLE_RANGES.get(k) or PLAUSIBLE_RANGES.get(k.replace("_", ""))


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers of a command-line option, e.g. ``--C 1,10,100``.

    Raises
    ------
    InputError
        An entry is not a number, or nothing is given (message names ``option``).
    """
    out = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise InputError(f"{option}: {part.strip()!r} is not a number (expected e.g. 1,10,100)") from None
    if not out:
        raise InputError(f"{option}: no values given")
    return tuple(out)


def label_values(column, name: str, source: str) -> np.ndarray:
    """A label column as floats; masked entries become NaN, text is refused.

    Parameters
    ----------
    column : array-like or astropy column, (n,)
    name : str
        Column name (for the message).
    source : str
        File name (for the message).

    Raises
    ------
    InputError
        The column holds text that is not a number (e.g. ``"3300K"``).
    """
    col = column
    if hasattr(col, "mask") and np.any(np.asarray(col.mask)):
        mask = np.asarray(col.mask, bool)
        col = col.filled(np.nan) if np.asarray(col).dtype.kind == "f" else np.asarray(col.data)
    else:
        mask = None
    arr = np.asarray(col)
    if arr.dtype.kind in "USO":
        out = np.full(arr.shape, np.nan)
        bad = []
        for i, v in enumerate(arr):
            s = str(v).strip()
            if s == "" or s.lower() in ("nan", "null", "none", "--"):
                continue
            try:
                out[i] = float(s)
            except ValueError:
                bad.append(s)
        if bad:
            raise InputError(f"{source}: column {name!r} has {len(bad)} non-numeric value(s), e.g. {bad[0]!r}; "
                             "give plain numbers (units go in --label-units or the column unit)")
    else:
        out = arr.astype(float)
    if mask is not None:
        out = np.where(mask, np.nan, out)
    return out


def check_hyperparameters(C: Sequence[float], epsilon: Sequence[float], gamma: Sequence[float]) -> None:
    """Refuse a hyperparameter grid that cannot train a model.

    ``C`` and ``gamma`` must be finite and > 0; ``epsilon`` finite, >= 0 and at
    most :data:`EPSILON_MAX` (standardised flux units).

    Raises
    ------
    InputError
        Names the parameter and the bad value(s).
    """
    for name, vals, lo_ok, hi in (("C", C, lambda v: v > 0, None), ("gamma", gamma, lambda v: v > 0, None),
                                  ("epsilon", epsilon, lambda v: v >= 0, EPSILON_MAX)):
        v = np.asarray(vals, float).ravel()
        if v.size == 0:
            raise InputError(f"{name}: the grid is empty")
        bad = v[~np.isfinite(v) | ~lo_ok(v) | ((v > hi) if hi is not None else False)]
        if bad.size:
            rule = {"C": "finite and > 0", "gamma": "finite and > 0",
                    "epsilon": f"finite, >= 0 and <= {EPSILON_MAX} (standardised flux)"}[name]
            raise InputError(f"{name}: {bad.tolist()} not allowed; values must be {rule}")


def check_cv(cv, n_train: int) -> None:
    """Refuse an integer ``cv`` that does not fit ``n_train`` stars (needs ``2 <= cv <= n_train``).

    Raises
    ------
    InputError
        Too few training stars, or ``cv`` outside ``[2, n_train]``.
    """
    if n_train < 2:
        raise InputError(f"only {n_train} training star(s) with usable labels and flux: need at least 2")
    if isinstance(cv, (int, np.integer)) and not 2 <= int(cv) <= n_train:
        raise InputError(f"cv={int(cv)}: k-fold cross-validation needs 2 <= cv <= n_train={n_train}")


def check_training_labels(y: np.ndarray, names: Sequence[str], units: Sequence[str] | None = None,
                          source: str = "labels") -> np.ndarray:
    """Rows of a training label array that can be used; refuse impossible labels.

    Rows with a NaN/inf label, or one equal to a :data:`SENTINELS` code, are
    excluded, each kind with a logged warning giving its count. Then, over the
    rows kept, every label with a known name must lie inside
    :data:`PLAUSIBLE_RANGES` and no label may be constant.

    Parameters
    ----------
    y : (n_star, n_label) array
        Training labels in physical units.
    names : sequence of str, (n_label,)
        Label names.
    units : sequence of str, optional
        Label units (only used in messages).
    source : str
        Where the labels come from (file name), for messages.

    Returns
    -------
    keep : (n_star,) bool array
        True for rows to train on.

    Raises
    ------
    InputError
        A label outside its plausible range, a constant label, or no usable row.
    """
    y = np.asarray(y, float)
    if y.ndim == 1:
        y = y[:, None]
    units = list(units) if units is not None else [""] * y.shape[1]
    finite = np.all(np.isfinite(y), axis=1)
    sentinel = np.any(np.isin(y, SENTINELS), axis=1) & finite
    if (~finite).any():
        log.warning("%s: %d of %d row(s) without finite labels excluded", source, int((~finite).sum()), len(y))
    if sentinel.any():
        log.warning("%s: %d of %d row(s) holding a no-value code (%s) excluded", source, int(sentinel.sum()),
                    len(y), ", ".join(f"{s:g}" for s in SENTINELS))
    keep = finite & ~sentinel
    if not keep.any():
        raise InputError(f"{source}: no row has finite labels ({int((~finite).sum())} NaN, "
                         f"{int(sentinel.sum())} no-value codes of {len(y)})")
    for k, name in enumerate(names):
        v = y[keep, k]
        rng = plausible_range(name)
        unit = f" {units[k]}" if k < len(units) and units[k] else ""
        if rng is not None:
            out = (v < rng[0]) | (v > rng[1])
            if out.any():
                hint = ""
                if rng[0] >= 1000 and np.nanmax(np.abs(v)) < 100:
                    hint = " (given in thousands of K?)"
                raise InputError(f"{source}: {int(out.sum())} value(s) of {name!r} outside its plausible range "
                                 f"{rng[0]:g}..{rng[1]:g}{unit}, e.g. {v[out][0]:g}{unit}{hint}")
        if v.size >= 2 and np.ptp(v) == 0:
            raise InputError(f"{source}: label {name!r} is constant ({v[0]:g}{unit}) over the "
                             f"{int(keep.sum())} training stars; drop it")
    return keep


def check_training_ivar(ivar: np.ndarray | None, source: str = "spectra") -> np.ndarray | None:
    """Spectra with some information; an all-zero ivar row is excluded (logged with the count).

    Parameters
    ----------
    ivar : (n_star, n_pix) array or None

    Returns
    -------
    keep : (n_star,) bool array, or None when ``ivar`` is None.

    Raises
    ------
    InputError
        Every spectrum has zero (or invalid) inverse variance everywhere.
    """
    if ivar is None:
        return None
    iv = np.asarray(ivar, float)
    ok = np.any(np.isfinite(iv) & (iv > 0), axis=1)
    if not ok.any():
        raise InputError(f"{source}: inverse variance is zero or invalid in every pixel of all {len(iv)} spectra")
    if (~ok).any():
        log.warning("%s: %d of %d spectra with zero inverse variance everywhere excluded", source,
                    int((~ok).sum()), len(iv))
    return ok


def check_unique_ids(ids: Sequence, source: str, column: str = "id") -> None:
    """Refuse duplicate identifiers (a star would get another's labels).

    Raises
    ------
    InputError
        Names the file, the column, the number of duplicated ids and an example.
    """
    vals = np.asarray([str(v).strip() for v in ids])
    u, counts = np.unique(vals, return_counts=True)
    dup = u[counts > 1]
    if dup.size:
        raise InputError(f"{source}: column {column!r} has {dup.size} duplicated id(s), e.g. {str(dup[0])!r}")


def check_same_grid(waves: Sequence[np.ndarray | None], files: Sequence[str]) -> None:
    """Refuse files whose wavelength grids differ (they cannot be stacked pixel by pixel).

    Grids agree when they have the same length and differ by at most
    :data:`GRID_TOLERANCE` pixels; files without a grid are not compared.

    Raises
    ------
    InputError
        Names the first file that differs from the first file with a grid.
    """
    ref, ref_file = None, None
    for w, f in zip(waves, files, strict=True):
        if w is None:
            continue
        if ref is None:
            ref, ref_file = np.asarray(w, float), f
            continue
        problem = grid_problem(w, ref)
        if problem:
            raise InputError(f"{f}: wavelength grid differs from {ref_file}'s ({problem}); "
                             "put all spectra on one grid")


def grid_problem(wave: np.ndarray | None, model_wave: np.ndarray, tolerance: float = GRID_TOLERANCE) -> str:
    """Why ``wave`` is not the model's grid, or ``""`` if it is (or is unknown).

    Parameters
    ----------
    wave : (n_pix,) array or None
        Wavelength (Angstrom) of the spectra; None = not given, not checked.
    model_wave : (n_pix,) array
        The model grid (Angstrom).
    tolerance : float
        Largest allowed ``|wave - model_wave|`` in units of the model's local
        pixel width.
    """
    if wave is None:
        return ""
    w = np.asarray(wave, float).ravel()
    m = np.asarray(model_wave, float).ravel()
    if w.size != m.size:
        return f"{w.size} wavelengths for a {m.size}-pixel grid"
    if not np.all(np.isfinite(w)):
        return "non-finite wavelengths"
    step = np.abs(np.gradient(m)) if m.size > 1 else np.ones(1)
    if m.size > 1 and np.all(np.diff(w) < 0) and np.all(np.abs(w[::-1] - m) <= tolerance * step):
        return "wavelength runs backwards (reversed grid)"
    d = np.abs(w - m) / step
    if np.max(d) > tolerance:
        i = int(np.argmax(d))
        return (f"grid {w.min():.6g}-{w.max():.6g} A vs {m.min():.6g}-{m.max():.6g} A, off by "
                f"{d[i]:.3g} pixels at pixel {i} (tolerance {tolerance:g})")
    return ""


def require_grid(wave: np.ndarray | None, model_wave: np.ndarray, source: str) -> None:
    """Raise :class:`InputError` naming ``source`` when ``wave`` is not the model grid (see :func:`grid_problem`).

    A model trained without a wavelength grid (its grid is the pixel index ``0..n_pix-1``)
    only checks the number of pixels.
    """
    m = np.asarray(model_wave, float).ravel()
    if wave is not None and np.array_equal(m, np.arange(m.size)):
        wave = None if np.asarray(wave).size == m.size else wave
    problem = grid_problem(wave, model_wave)
    if problem:
        raise InputError(f"{source}: spectra are not on the model wavelength grid ({problem})")


def flux_level_problem(flux: np.ndarray, reference_level: float,
                       level_range: tuple[float, float] = FLUX_LEVEL_RANGE) -> np.ndarray:
    """Which spectra are not normalised like the training spectra.

    Parameters
    ----------
    flux : (n_spec, n_pix) array
        Spectra (NaN = missing pixel).
    reference_level : float
        Median flux of the model's training spectra (``median(flux_mean_)``).
    level_range : (low, high)
        Accepted ratio ``median(flux) / reference_level``.

    Returns
    -------
    (n_spec,) bool array: True where the ratio is outside ``level_range``
    (spectra without a finite pixel are not marked here).
    """
    f = np.array(flux, float, ndmin=2)
    with np.errstate(invalid="ignore"):
        ratio = row_nanmedian(f) / reference_level
    has = np.isfinite(f).any(axis=1)
    return has & ((ratio < level_range[0]) | (ratio > level_range[1]) | ~np.isfinite(ratio))


def row_nanmedian(a: np.ndarray) -> np.ndarray:
    """Median of each row over its finite values, the numbers of ``np.nanmedian(a, axis=1)`` with inf as NaN.

    ``np.nanmedian`` goes row by row (a Python loop over ``np.median``) for rows of 600 values
    or more; here rows without a missing value take one vectorised ``np.median`` and the others
    one sort, the middle values averaged as ``np.median`` does.

    Parameters
    ----------
    a : (n, m) array

    Returns
    -------
    (n,) float64 array, NaN for a row without a finite value.
    """
    a = np.asarray(a, float)
    fin = np.isfinite(a)
    if a.shape[1] and fin.all():                         # no missing value: one sort, np.median's numbers
        srt, n = np.sort(a, axis=1), a.shape[1]
        return srt[:, n // 2] if n % 2 else np.mean(np.stack([srt[:, n // 2 - 1], srt[:, n // 2]]), axis=0)
    cnt = fin.sum(axis=1)
    out = np.full(a.shape[0], np.nan)
    full = cnt == a.shape[1]
    if full.any() and a.shape[1]:
        out[full] = np.median(a[full], axis=1)
    part = ~full & (cnt > 0)
    if part.any():
        srt = np.sort(np.where(fin[part], a[part], np.inf), axis=1)       # the finite values first
        c, rows = cnt[part], np.arange(int(part.sum()))
        hi = srt[rows, c // 2]
        out[part] = np.where(c % 2 == 1, hi, np.mean(np.stack([srt[rows, (c - 1) // 2], hi]), axis=0))
    return out


def rchi2_threshold(rchi2_train: np.ndarray) -> float:
    """Bad-fit threshold on the reduced chi2, from the training stars' own fits.

    ``max(RCHI2_FLOOR, RCHI2_FACTOR * quantile(rchi2_train, RCHI2_QUANTILE))``
    over the finite values; ``RCHI2_FLOOR`` when there are none.
    """
    r = np.asarray(rchi2_train, float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float(RCHI2_FLOOR)
    return float(max(RCHI2_FLOOR, RCHI2_FACTOR * np.quantile(r, RCHI2_QUANTILE)))


#: :func:`knn_distance` computes every point-reference distance when there are at most this many
#: pairs (a batch of spectra against a training set: faster than building a k-d tree for them);
#: beyond, a k-d tree.  Both give the same numbers (the squared distance summed label by label).
KNN_BRUTE_PAIRS = 2**21


def knn_distance(points: np.ndarray, reference: np.ndarray, k: int = KNN_K,
                 exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance of each point to its ``k``-th nearest reference point.

    Parameters
    ----------
    points : (m, n_label) array
        Standardised labels (NaN rows give NaN).
    reference : (n, n_label) array
        Standardised training labels.
    k : int
        Neighbour rank (1 = nearest); capped at the number of reference points.
    exclude_self : bool
        ``points`` is ``reference`` itself: skip the zero self-distance.

    Returns
    -------
    (m,) array of distances (standardised label units).
    """
    p = np.array(points, float, ndmin=2)
    ref = np.array(reference, float, ndmin=2)
    kk = min(int(k) + (1 if exclude_self else 0), ref.shape[0])
    out = np.full(p.shape[0], np.nan)
    ok = np.all(np.isfinite(p), axis=1)
    if not ok.any() or kk < 1:
        return out
    if ok.sum() * ref.shape[0] <= KNN_BRUTE_PAIRS:       # all distances, then the k-th smallest of each row
        d2 = squared_distances(p[ok], ref)
        out[ok] = np.sqrt(np.partition(d2, kk - 1, axis=1)[:, kk - 1])
        return out
    from scipy.spatial import cKDTree

    d, _ = cKDTree(ref).query(p[ok], k=kk)
    out[ok] = d if d.ndim == 1 else d[:, -1]
    return out


def knn_threshold(X_train: np.ndarray, k: int = KNN_K) -> float:
    """Far-from-training threshold: ``KNN_FACTOR * quantile(d_k, KNN_QUANTILE)``.

    ``d_k`` is each training star's distance (standardised labels) to its
    ``k``-th nearest *other* training star.
    """
    d = knn_distance(X_train, X_train, k=k, exclude_self=True)
    d = d[np.isfinite(d)]
    return float(KNN_FACTOR * np.quantile(d, KNN_QUANTILE)) if d.size else np.inf


def training_rows(labels: np.ndarray, good: np.ndarray, names: Sequence[str], units: Sequence[str],
                  C: Sequence[float], epsilon: Sequence[float], gamma: Sequence[float], cv) -> np.ndarray:
    """All checks of a training set before the first SVR is solved; returns the rows to train on.

    Parameters
    ----------
    labels : (n_star, n_label) array
        Training labels, physical units.
    good : (n_star, n_pix) bool array
        Usable flux pixels (finite flux, positive ivar).
    names, units : sequence of str, (n_label,)
    C, epsilon, gamma : sequence of float
        The hyperparameter grid.
    cv : int or splitter
        Cross-validation folds.

    Returns
    -------
    keep : (n_star,) bool array
        Rows without no-value codes and with at least one usable pixel (the
        excluded ones are logged with their count).

    Raises
    ------
    InputError
        See :func:`check_hyperparameters`, :func:`check_training_labels`, :func:`check_cv`.
    """
    check_hyperparameters(C, epsilon, gamma)
    keep = check_training_labels(labels, names, units, source="training labels")
    has_pix = np.asarray(good, bool).any(axis=1)
    if (~has_pix).any():
        log.warning("training spectra: %d of %d without any usable pixel (ivar 0 or NaN flux) excluded",
                    int((~has_pix).sum()), len(has_pix))
    keep &= has_pix
    if (~keep).any() and not isinstance(cv, (int, np.integer)) and not hasattr(cv, "split"):
        raise InputError(f"cv: explicit folds were given for {len(keep)} stars but {int((~keep).sum())} "
                         "were excluded (no-value labels or no usable pixel); drop them before making the folds")
    check_cv(cv, int(keep.sum()))
    check_training_labels(np.asarray(labels, float)[keep], names, units, source="training labels")
    return keep


def fit_flags(rchi2: np.ndarray, theta_scaled: np.ndarray, X_train: np.ndarray, flux: np.ndarray, *,
              rchi2_threshold: float, knn_threshold: float, knn_k: int, flux_level: float) -> np.ndarray:
    """The fit-quality :class:`~mdslam.flags.LabelFlag` bits of labelled spectra.

    Parameters
    ----------
    rchi2 : (n,) array
        Reduced chi2 of the best fits.
    theta_scaled : (n, n_label) array
        Best-fit labels, standardised like ``X_train``.
    X_train : (n_train, n_label) array
        Standardised training labels.
    flux : (n, n_pix) array
        The spectra.
    rchi2_threshold, knn_threshold : float
        From :func:`rchi2_threshold` and :func:`knn_threshold` (``inf`` = off).
    knn_k : int
        Neighbour rank of the kNN distance.
    flux_level : float
        Median training flux (:func:`flux_level_problem`).

    Returns
    -------
    (n,) int64 array of ``BAD_FIT | FAR_FROM_TRAINING | NOT_NORMALISED`` bits.
    """
    from .flags import LabelFlag

    r = np.asarray(rchi2, float)
    out = np.zeros(r.size, np.int64)
    with np.errstate(invalid="ignore"):
        out[r > rchi2_threshold] |= LabelFlag.BAD_FIT
        if np.isfinite(knn_threshold):
            d = knn_distance(theta_scaled, X_train, k=knn_k)
            out[d > knn_threshold] |= LabelFlag.FAR_FROM_TRAINING
    if np.isfinite(flux_level) and flux_level != 0:
        out[flux_level_problem(flux, flux_level)] |= LabelFlag.NOT_NORMALISED
    return out
