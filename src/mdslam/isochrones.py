"""PARSEC isochrones in Gaia EDR3 and 2MASS bands, read offline from registry packages.

Stellar models: PARSEC v1.2S (Bressan et al. 2012; Chen et al. 2014 for the low-mass
boundary conditions) as shipped by the PyPI package ``lachesis-grids`` 0.0.9
(``grids/parsec_v1.25.h5``, dataset ``parsec_isochrones``): [M/H] from -2 to +0.5 in
0.25 dex steps, log(age/yr) from 5 to 10.25 in 0.05 steps, each isochrone sampled in
EEP with initial and current mass, Teff, log g, log L and M_bol (M_bol,sun = 4.74).

That grid carries no magnitudes. Absolute magnitudes here are ``M_band = M_bol - BC_band``
with the MIST bolometric corrections (Choi et al. 2016; C3K/ATLAS atmospheres; Vega
system) shipped by the PyPI package ``astrolachesis`` 1.0.9
(``Datafiles/BC_tables/bc_tables.h5``, dataset ``mist_bolometric_corrections``),
interpolated linearly in (Teff, log g, [Fe/H]) at A_V = 0. They are therefore PARSEC
interiors with MIST colours, not the YBC magnitudes of the PARSEC web service, which
needs the internet. :func:`parsec_isochrone` reads one isochrone at a grid node;
:func:`mist_bc` gives the corrections on their own.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from astropy.table import Table

from . import datasets

__all__ = ["BANDS", "parsec_grid_axes", "parsec_isochrone", "mist_bc"]

#: Output column -> band name in the MIST UBVRIplus table.
BANDS: dict[str, str] = {"G": "Gaia_G_EDR3", "BP": "Gaia_BP_EDR3", "RP": "Gaia_RP_EDR3",
                         "J": "2MASS_J", "H": "2MASS_H", "Ks": "2MASS_Ks"}


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py ships with the book environment
        raise ImportError("mdslam.isochrones needs h5py (pip install h5py)") from exc
    return h5py


@lru_cache(maxsize=1)
def _parsec_index() -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    path = str(datasets.fetch("parsec_isochrones")[0])
    with _h5py().File(path, "r") as h:
        if h.attrs.get("storage") != "sparse_v1":
            raise ValueError(f"{path}: expected the lachesis 'sparse_v1' layout, got {h.attrs.get('storage')!r}")
        feh = np.asarray(h["feh_values"][:], float)
        age = np.asarray(h["age_values"][:], float)
        lengths = np.asarray(h["lengths"][:], np.int64)
        cols = [c.decode() if isinstance(c, bytes) else str(c) for c in h.attrs["columns"]]
    start = np.concatenate([[0], np.cumsum(lengths)])
    return path, feh, age, start, lengths, cols


def parsec_grid_axes() -> tuple[np.ndarray, np.ndarray]:
    """The grid nodes: ([M/H] in dex, log10(age / yr))."""
    _, feh, age, *_ = _parsec_index()
    return feh.copy(), age.copy()


def _node(values: np.ndarray, x: float, what: str) -> int:
    i = int(np.argmin(np.abs(values - x)))
    step = np.min(np.diff(values)) if len(values) > 1 else np.inf
    if abs(values[i] - x) > 0.5 * step + 1e-9:
        raise ValueError(f"{what} = {x:g} is outside the PARSEC grid ({values.min():g} to {values.max():g})")
    return i


@lru_cache(maxsize=1)
def _bc_grid():
    from scipy.interpolate import RegularGridInterpolator

    path = str(datasets.fetch("mist_bolometric_corrections")[0])
    with _h5py().File(path, "r") as h:
        g = h["UBVRIplus"]
        bands = [b.decode() for b in g["band_names"][:]]
        feh = np.asarray(g["feh_values"][:], float)
        raw = np.asarray(g["data"][:], float)          # (n_feh, n_rows, Teff logg feh Av Rv bands...)
    av0 = raw[0, :, 3] == 0.0
    teff = np.unique(raw[0, av0, 0])
    logg = np.unique(raw[0, av0, 1])
    cube = np.full((len(feh), len(teff), len(logg), len(bands)), np.nan)
    for k in range(len(feh)):
        rows = raw[k][raw[k][:, 3] == 0.0]
        it = np.searchsorted(teff, rows[:, 0])
        ig = np.searchsorted(logg, rows[:, 1])
        cube[k, it, ig] = rows[:, 5:]
    return RegularGridInterpolator((feh, teff, logg), cube, bounds_error=False, fill_value=np.nan), bands


def mist_bc(teff, logg, feh, bands=tuple(BANDS)) -> dict[str, np.ndarray]:
    """MIST bolometric corrections BC_band (mag, Vega) at A_V = 0.

    Parameters
    ----------
    teff : array_like
        Effective temperature (K); the table spans 2500 K to 1e6 K (nodes 2500,
        2800, 3000, 3200, 3500, 3750, 4000 K ... in the M dwarf range).
    logg : array_like
        log10(g / cm s^-2), -4 to 9.5.
    feh : array_like
        [Fe/H] (dex), -4 to +0.75.
    bands : sequence of str
        Keys of :data:`BANDS` or MIST band names.

    Returns
    -------
    dict
        ``{band: BC}`` arrays of the broadcast input shape; NaN outside the table.
        ``M_band = M_bol - BC_band``.
    """
    interp, names = _bc_grid()
    t, g, f = np.broadcast_arrays(np.asarray(teff, float), np.asarray(logg, float), np.asarray(feh, float))
    vals = interp(np.column_stack([f.ravel(), t.ravel(), g.ravel()]))
    out = {}
    for b in bands:
        j = names.index(BANDS.get(b, b))
        out[b] = vals[:, j].reshape(t.shape)
    return out


def parsec_isochrone(age_gyr: float, mh: float, *, max_logg: float | None = None,
                     min_logg: float | None = None) -> Table:
    """One PARSEC v1.2S isochrone with Gaia EDR3 and 2MASS absolute magnitudes.

    Parameters
    ----------
    age_gyr : float
        Age in Gyr; the nearest grid node in log age (0.05 dex steps) is used,
        and must lie within half a step.
    mh : float
        [M/H] in dex; the nearest grid node (0.25 dex steps from -2 to +0.5), within
        half a step (so +0.3 reads the +0.25 isochrone: see ``meta["MH"]``).
    min_logg, max_logg : float, optional
        Keep only points with log g in this range (e.g. ``min_logg=4`` for dwarfs).

    Returns
    -------
    Table
        Ordered by initial mass: ``initial_mass``, ``mass`` (Msun), ``teff`` (K),
        ``logg``, ``logl`` (dex), ``mbol``, ``phase`` (PARSEC label: 0 pre-main
        sequence, 1 main sequence, ...), the absolute magnitudes ``G``, ``BP``, ``RP``,
        ``J``, ``H``, ``Ks`` (mag, Vega; MIST bolometric corrections) and ``BP_RP``.
        ``meta`` holds the node used (``LOGAGE``, ``AGE_GYR``, ``MH``) and the sources.
    """
    path, feh, age, start, lengths, cols = _parsec_index()
    i_f = _node(feh, float(mh), "[M/H]")
    i_a = _node(age, float(np.log10(age_gyr * 1e9)), "log age")
    k = i_f * len(age) + i_a
    if lengths[k] == 0:
        raise ValueError(f"no PARSEC isochrone at [M/H] = {feh[i_f]:g}, log age = {age[i_a]:g}")
    with _h5py().File(path, "r") as h:
        v = np.asarray(h["values"][start[k]:start[k + 1]], float)
    c = {n: v[:, cols.index(n)] for n in cols}
    out = Table()
    out["initial_mass"] = c["initial_mass"]
    out["mass"] = c["star_mass"]
    out["teff"] = c["Teff"]
    out["logg"] = c["log_g"]
    out["logl"] = c["log_L"]
    out["mbol"] = c["Mbol"]
    out["phase"] = c["phase"]
    bc = mist_bc(out["teff"], out["logg"], np.full(len(out), feh[i_f]))
    for b in BANDS:
        out[b] = out["mbol"] - bc[b]
    out["BP_RP"] = out["BP"] - out["RP"]
    for n, unit in (("initial_mass", "solMass"), ("mass", "solMass"), ("teff", "K"), ("logg", "dex"),
                    ("logl", "dex"), ("mbol", "mag"), *((b, "mag") for b in (*BANDS, "BP_RP"))):
        out[n].unit = unit
    keep = np.isfinite(out["teff"]) & np.isfinite(out["initial_mass"])
    if min_logg is not None:
        keep &= np.asarray(out["logg"]) >= min_logg
    if max_logg is not None:
        keep &= np.asarray(out["logg"]) <= max_logg
    out = out[keep]
    out.sort("initial_mass")
    out.meta.update(LOGAGE=float(age[i_a]), AGE_GYR=float(10 ** (age[i_a] - 9)), MH=float(feh[i_f]),
                    SOURCE="PARSEC v1.2S (lachesis-grids 0.0.9) + MIST BCs (astrolachesis 1.0.9)")
    return out
