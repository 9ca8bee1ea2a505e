"""Chapter 7's analyses: the ASPCAP [Fe/H] calibration of Qiu et al. (2025) sec. 5, eq. 10.

* :func:`calibration_sample`: the stars and Q25's cuts, B20 Table 6 offline or
  Q25's DR19 SLAM x ASPCAP in archive mode (same column names);
* :func:`coefficient_table`: eq. 10 published against a refit;
* :func:`correction_statistics`, :func:`held_out`, :func:`metallicity_split`:
  the reference minus ASPCAP [Fe/H] before and after the correction;
* :func:`residual_panels`: the three-panel figure against ASPCAP Teff.

Every [Fe/H] is in dex, every Teff in K.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from .. import relations, selection, validation
from .chapter import INPUTS, load

__all__ = ["CalibrationSample", "calibration_sample", "coefficient_table", "correction_statistics",
           "comparison_table", "held_out", "metallicity_split", "residual_panels"]


@dataclass
class CalibrationSample:
    """The stars of the eq. 10 calibration after Q25 sec. 5's cuts.

    Attributes
    ----------
    table : Table
        Every star read (``TEFF_APOGEE``, ``M_H_APOGEE``, ``FE_H``, ``SNR``, ``BP_RP``, ``G_MAG``, ``PLX``).
    ok : (n,) bool array
        The stars that pass every cut.
    flow : Table
        What each cut removes.
    teff, feh_aspcap, feh_ref : (n_ok,) arrays
        ASPCAP Teff [K] and [M/H] [dex], and the reference [Fe/H] [dex], of the kept stars.
    ref, sample, label : str
        Name of the reference [Fe/H] (``"B20"`` or ``"SLAM"``), of the sample, and the figure label.
    datasets : list of str
        The registry datasets read (none in archive mode).
    """

    table: Table
    ok: np.ndarray
    flow: Table
    teff: np.ndarray
    feh_aspcap: np.ndarray
    feh_ref: np.ndarray
    ref: str
    sample: str
    label: str
    datasets: list[str]


def calibration_sample(data_mode: str = "offline", n_max: int | None = None, seed: int = 42, *,
                       apogee_snr_min: float = 20.0, feh_min: float = -0.6,
                       teff_max: float = 4200.0) -> CalibrationSample:
    """The calibration stars with Q25 sec. 5's cuts (APOGEE SNR, reference [Fe/H], ASPCAP Teff).

    Offline: B20 Table 6 (ASPCAP DR14 Teff and [M/H], B20 Cannon [Fe/H] as the
    reference). Archive: Q25's released DR19 BOSS SLAM [Fe/H] x ASPCAP DR19
    (:func:`mdslam.compendium.inputs.aspcap_calibration_sample`), with the BOSS SNR > 10 cut too.

    Parameters
    ----------
    data_mode : str
        ``"offline"`` or ``"archive"``.
    n_max, seed : int, optional
        At most ``n_max`` stars, seeded.
    apogee_snr_min, feh_min, teff_max : float
        APOGEE SNR > ``apogee_snr_min``; reference [Fe/H] > ``feh_min`` [dex]; ASPCAP Teff < ``teff_max`` [K].

    Returns
    -------
    CalibrationSample
    """
    tab = load("aspcap_calibration", data_mode, n_max, seed)
    if data_mode == "archive":
        ref, sample = "SLAM", "DR19 BOSS SLAM x ASPCAP DR19"
        label = "archive: DR19 astraAllStarSlam x astraAllStarASPCAP x Gaia DR3 (real)"
    else:
        ref, sample, label = "B20", "B20 Table 6", "catalogs track: B20 Table 6 (ASPCAP DR14, Cannon FE_H)"
    teff = selection.column(tab, "TEFF_APOGEE")   # -9999 -> NaN
    feh_asp = selection.column(tab, "M_H_APOGEE")
    feh_ref = selection.column(tab, "FE_H")
    cuts = {
        f"SNR_APOGEE > {apogee_snr_min:g}": selection.column(tab, "SNR") > apogee_snr_min,
        f"[Fe/H]_{ref} > {feh_min:g}": feh_ref > feh_min,
        "finite ASPCAP Teff, [M/H]": np.isfinite(teff) & np.isfinite(feh_asp),
        f"ASPCAP Teff < {teff_max:g}": teff < teff_max,
    }
    if data_mode == "archive":  # Q25 sec. 5: BOSS SNR > 10 too
        cuts["SNR_BOSS > 10"] = selection.column(tab, "SNR_BOSS") > 10
    ok = selection.combine(cuts)
    return CalibrationSample(tab, ok, selection.cut_flow(tab, cuts), teff[ok], feh_asp[ok], feh_ref[ok], ref,
                             sample, label, [] if data_mode == "archive" else [INPUTS["aspcap_calibration"][0]])


def coefficient_table(coef: np.ndarray, cov: np.ndarray, ref: str) -> Table:
    """Eq. 10's six coefficients: Q25's, the refit with its error, and their difference in errors.

    Parameters
    ----------
    coef, cov : (6,) and (6, 6) arrays
        :func:`mdslam.relations.fit_aspcap_correction` (x = Teff, y = [M/H]).
    ref : str
        Name of the reference [Fe/H] of the refit.
    """
    err = np.sqrt(np.diag(cov))
    return Table({"term": ["x^2", "y^2", "xy", "x", "y", "1"], "Q25 eq. 10": relations.ASPCAP_CORRECTION_COEFFS,
                  f"refit ({ref})": coef, "refit error": err,
                  "difference / error": (coef - relations.ASPCAP_CORRECTION_COEFFS) / err})


def comparison_table(comparisons: Mapping[str, validation.Comparison], name: str = "comparison") -> Table:
    """One row per :class:`mdslam.validation.Comparison`: ``name``, median, std, robust_std, n."""
    return Table({name: list(comparisons), "median": [c.median for c in comparisons.values()],
                  "std": [c.std for c in comparisons.values()],
                  "robust_std": [c.robust_std for c in comparisons.values()],
                  "n": [c.n for c in comparisons.values()]})


def correction_statistics(teff: np.ndarray, feh_aspcap: np.ndarray, feh_ref: np.ndarray, coef: np.ndarray,
                          ref: str) -> dict[str, validation.Comparison]:
    """Reference minus ASPCAP [Fe/H]: before, after eq. 10 as published, after the refit ``coef``.

    Keys ``"before: <ref> - ASPCAP"``, ``"after: <ref> - (ASPCAP + eq. 10 published)"`` and
    ``"after: <ref> - (ASPCAP + eq. 10 refit)"``, in that order.
    """
    return {f"before: {ref} - ASPCAP": validation.compare(feh_ref, feh_aspcap),
            f"after: {ref} - (ASPCAP + eq. 10 published)": validation.compare(
                feh_ref, relations.calibrate_aspcap_feh(teff, feh_aspcap)),
            f"after: {ref} - (ASPCAP + eq. 10 refit)": validation.compare(
                feh_ref, relations.calibrate_aspcap_feh(teff, feh_aspcap, coef))}


def held_out(teff: np.ndarray, feh_aspcap: np.ndarray, feh_ref: np.ndarray, coef: np.ndarray,
             seed: int = 42) -> tuple[dict[str, validation.Comparison], int]:
    """Refit eq. 10 on a random half and compare on the other (seeded 50/50 split).

    Returns
    -------
    (dict, int)
        On the test half: ``"before (ASPCAP)"``, ``"ASPCAP + eq. 10 published"``,
        ``"ASPCAP + refit on all stars (in-sample)"`` (``coef``) and
        ``"ASPCAP + refit on the other half (held out)"``; the size of the fit half.
    """
    from .tracks import train_test_split

    t, y, ref = teff, feh_aspcap, feh_ref
    train, test = train_test_split(len(t), test_fraction=0.5, seed=seed)
    coef_half, _ = relations.fit_aspcap_correction(t[train], y[train], ref[train])
    return {
        "before (ASPCAP)": validation.compare(ref[test], y[test]),
        "ASPCAP + eq. 10 published": validation.compare(ref[test], relations.calibrate_aspcap_feh(t[test], y[test])),
        "ASPCAP + refit on all stars (in-sample)": validation.compare(
            ref[test], relations.calibrate_aspcap_feh(t[test], y[test], coef)),
        "ASPCAP + refit on the other half (held out)": validation.compare(
            ref[test], relations.calibrate_aspcap_feh(t[test], y[test], coef_half)),
    }, len(train)


def metallicity_split(feh_aspcap: np.ndarray, feh_ref: np.ndarray, split: float = -0.25) -> Table:
    """Reference minus ASPCAP [Fe/H] for all stars and either side of ASPCAP [M/H] = ``split`` (L21 sec. 4.2).

    Returns
    -------
    Table
        ``sample``, ``n``, ``median offset``, ``mean offset``, ``std``, ``robust_std`` [dex].
    """
    y, ref = feh_aspcap, feh_ref
    rows = []
    for name, m in (("all", np.ones(len(y), bool)), (f"[M/H]_APOGEE > {split:g}", y > split),
                    (f"[M/H]_APOGEE < {split:g}", y < split)):
        c = validation.compare(ref[m], y[m])
        rows.append((name, c.n, c.median, c.mean, c.std, c.robust_std))
    return Table(rows=rows, names=("sample", "n", "median offset", "mean offset", "std", "robust_std"))


def residual_panels(teff: np.ndarray, feh_aspcap: np.ndarray, feh_ref: np.ndarray, coef: np.ndarray, ref: str):
    """Reference minus ASPCAP [Fe/H] against ASPCAP Teff: before, after eq. 10 published, after the refit.

    Points coloured by ASPCAP [M/H]; binned medians with their scatter (10 bins, >= 10 stars).

    Returns
    -------
    matplotlib.figure.Figure
        Three panels sharing the y axis (without the data label: add it with
        :func:`mdslam.plots.add_data_label`).
    """
    from matplotlib.figure import Figure

    t, y = teff, feh_aspcap
    panels = [("before", feh_ref - y),
              ("after eq. 10 (published)", feh_ref - relations.calibrate_aspcap_feh(t, y)),
              ("after eq. 10 (refit)", feh_ref - relations.calibrate_aspcap_feh(t, y, coef))]
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    for ax, (title, d) in zip(axes, panels, strict=True):
        sc = ax.scatter(t, d, c=y, s=3, cmap="viridis", vmin=-0.8, vmax=0.4, rasterized=True)
        bm = validation.binned_medians(t, d, bins=10, min_count=10)
        ax.errorbar(bm["x_median"], bm["median"], yerr=bm["std"], fmt="o", mfc="w", mec="k", ecolor="k")
        ax.axhline(0, color="k", lw=0.8)
        ax.set(title=title, xlabel=r"$T_{\rm eff,ASPCAP}$ [K]", ylim=(-1.0, 1.0))
    axes[0].set_ylabel(r"$\Delta$[Fe/H] = [Fe/H]$_{\rm B20}$ $-$ [Fe/H]$_{\rm ASPCAP(,corr)}$ [dex]".replace("B20", ref))
    fig.colorbar(sc, ax=axes, label="[M/H]$_{\\rm ASPCAP}$ [dex]")
    return fig
