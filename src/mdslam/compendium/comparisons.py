"""Chapter 4's Mann et al. comparisons: where the relations apply, and the reference's own zero point.

The Teff relation of Q25 eq. 12 (Mann et al. 2015, 2016 erratum) is a fit to
183 calibration stars; outside their range of BP-RP, J-H and [Fe/H] it
extrapolates a polynomial, so a comparison keeps only the stars inside that
range (:func:`mann_teff_cuts`, the range read from Mann et al.'s own table by
:func:`mann_teff_calibration_range`), and the log g of eqs. 9, 13, 14 only the
stars inside the radius relation's M_Ks range (:func:`mann_logg_cuts`). The
relation's BP-RP is Mann et al.'s synthetic Gaia colour, computed before Gaia's
first release: :func:`mann_relation_zero_point` measures what the relation gives
on the observed Gaia colours of Mann et al.'s own stars.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .. import crossmatch, relations, validation

__all__ = ["mann_teff_calibration_range", "range_cuts", "mann_teff_cuts", "mann_logg_cuts",
           "mann_relation_zero_point"]


def mann_teff_calibration_range(mann: Table) -> dict[str, tuple[float, float]]:
    """The range of Mann et al. (2015)'s calibration stars in the inputs of the Teff relation.

    Parameters
    ----------
    mann : Table
        Mann et al. 2015 Tables 5-7 (registry ``mann2015``): ``BPmag``, ``RPmag``
        (their synthetic Gaia magnitudes), ``Jmag``, ``Hmag`` (2MASS) [mag] and
        ``[Fe/H]`` [dex].

    Returns
    -------
    dict
        ``{"BP-RP": (lo, hi), "J-H": (lo, hi), "[Fe/H]": (lo, hi)}``, the finite
        minimum and maximum over the stars, in mag, mag and dex.
    """
    values = {"BP-RP": np.asarray(mann["BPmag"], float) - np.asarray(mann["RPmag"], float),
              "J-H": np.asarray(mann["Jmag"], float) - np.asarray(mann["Hmag"], float),
              "[Fe/H]": np.asarray(mann["[Fe/H]"], float)}
    return {k: (float(np.nanmin(v)), float(np.nanmax(v))) for k, v in values.items()}


def range_cuts(values: dict[str, np.ndarray], ranges: dict[str, tuple[float, float]],
               units: dict[str, str], source: str) -> dict[str, np.ndarray]:
    """One mask per quantity: the value lies inside its closed range (NaN lies outside).

    Parameters
    ----------
    values : dict
        Quantity name -> (n,) array.
    ranges : dict
        Quantity name -> ``(lo, hi)``, the unit of ``values``.
    units : dict
        Quantity name -> unit printed in the cut's name.
    source : str
        Whose range it is, printed in the cut's name.

    Returns
    -------
    dict
        ``"<name> inside the range of <source>: lo to hi <unit>"`` -> (n,) bool mask, in the
        order of ``values``; pass to :func:`mdslam.selection.cut_flow` to count.
    """
    out = {}
    for name, v in values.items():
        lo, hi = ranges[name]
        x = np.asarray(v, float)
        with np.errstate(invalid="ignore"):
            out[f"{name} inside the range of {source}: {lo:.3g} to {hi:.3g} {units[name]}"] = (x >= lo) & (x <= hi)
    return out


def mann_teff_cuts(bp_rp: np.ndarray, j_h: np.ndarray, feh: np.ndarray,
                   mann: Table) -> dict[str, np.ndarray]:
    """The stars inside the calibration range of the Mann et al. Teff relation (Q25 eq. 12).

    Parameters
    ----------
    bp_rp, j_h : (n,) arrays
        Gaia BP - RP and 2MASS J - H of the stars [mag].
    feh : (n,) array
        A reference [Fe/H] of the stars [dex] (e.g. APOGEE's); NaN fails the cut.
    mann : Table
        Mann et al. 2015 Tables 5-7 (:func:`mann_teff_calibration_range`).

    Returns
    -------
    dict
        :func:`range_cuts` masks for BP-RP, J-H and [Fe/H].
    """
    return range_cuts({"BP-RP": bp_rp, "J-H": j_h, "[Fe/H]": feh}, mann_teff_calibration_range(mann),
                      {"BP-RP": "mag", "J-H": "mag", "[Fe/H]": "dex"}, "the Mann et al. 2015 calibration stars")


def mann_logg_cuts(mks: np.ndarray) -> dict[str, np.ndarray]:
    """The stars inside the M_Ks range of the Mann et al. 2015 radius relation (Q25 eq. 13).

    Parameters
    ----------
    mks : (n,) array
        Absolute 2MASS Ks magnitude [mag].

    Returns
    -------
    dict
        One :func:`range_cuts` mask, :data:`mdslam.relations.MANN2015_RADIUS_MKS_RANGE`.
    """
    return range_cuts({"M_Ks": mks}, {"M_Ks": relations.MANN2015_RADIUS_MKS_RANGE}, {"M_Ks": "mag"},
                      "the Mann et al. 2015 radius relation")


def mann_relation_zero_point(mann: Table, b20_mann: Table, b20: Table,
                             radius_arcsec: float = 1.0) -> dict[str, validation.Comparison]:
    """The Teff relation on observed Gaia colours of Mann et al.'s own stars, minus their Teff.

    Mann et al. (2015) stars are found in B20 Table 4 by position (B20 list the
    same coordinates) and in B20 Table 6 by APOGEE_ID, whose ``BP_RP`` is the
    observed Gaia DR2 colour.

    Parameters
    ----------
    mann : Table
        Mann et al. 2015 Tables 5-7 (``RAdeg``, ``DEdeg``, ``Teff``, ``BPmag``,
        ``RPmag``, ``Jmag``, ``Hmag``).
    b20_mann, b20 : Table
        B20 Table 4 (``ID``, ``RA``, ``DEC``) and Table 6 (``APOGEE_ID``, ``BP_RP``).
    radius_arcsec : float
        Sky-match radius between Mann et al. and B20 Table 4.

    Returns
    -------
    dict
        :class:`mdslam.validation.Comparison` of, on the same stars,
        ``"relation(observed BP-RP) - Mann Teff"`` and
        ``"relation(synthetic BP-RP) - Mann Teff"`` [K] (both with Mann et al.'s
        J-H) and ``"observed - synthetic BP-RP"`` [mag].
    """
    x = crossmatch.match_sky(b20_mann, mann, radius_arcsec, left_ra="RA", left_dec="DEC",
                             right_ra="RAdeg", right_dec="DEdeg", table_names=("b20", "mann"))
    x = crossmatch.match_apogee_id(x, b20, left_col="ID", right_col="APOGEE_ID")
    observed = np.asarray(x["BP_RP"], float)
    synthetic = np.asarray(x["BPmag"], float) - np.asarray(x["RPmag"], float)
    j_h = np.asarray(x["Jmag"], float) - np.asarray(x["Hmag"], float)
    teff = np.asarray(x["Teff"], float)
    use = np.isfinite(observed) & np.isfinite(synthetic) & np.isfinite(j_h) & np.isfinite(teff)
    return {"relation(observed BP-RP) - Mann Teff":
            validation.compare(relations.mann2015_teff(observed, j_h)[use], teff[use]),
            "relation(synthetic BP-RP) - Mann Teff":
            validation.compare(relations.mann2015_teff(synthetic, j_h)[use], teff[use]),
            "observed - synthetic BP-RP": validation.compare(observed[use], synthetic[use])}
