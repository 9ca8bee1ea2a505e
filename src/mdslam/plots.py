"""The papers' figure types as functions returning matplotlib Figures.

Every function takes the data as numpy arrays (or the Tables of
:mod:`mdslam.validation`) and a required keyword ``data_label`` naming the data
track (e.g. ``"Gaia XP track (real spectra, APOGEE DR17 labels)"``), which is
written at the top of the figure so that no figure can be shown without
saying what it was made from. Figures are built with
:class:`matplotlib.figure.Figure` directly (no pyplot state); save them with
``fig.savefig`` or display them in a notebook.

Figure types: :func:`one_to_one` (L21 Figs. 3-5, Q25 Figs. 6-8),
:func:`cmd` (L21 Fig. 1, Q25 Fig. 1), :func:`cv_vs_snr` (L21 Fig. 2, Q25 Fig. 5),
:func:`label_histograms` (Q25 Fig. 3), :func:`pixel_hyperparameters` (SLAM
per-pixel C, epsilon, gamma and CV-MSE), :func:`histogram_gaussian` (L21 Figs. 7-9),
:func:`hr_diagram` (L21 Fig. 6) and :func:`binned_median_map` (Q25 Figs. 10-11);
:func:`add_isochrones` draws PARSEC isochrones (:mod:`mdslam.isochrones`) over a CMD or
an HR diagram.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from astropy.table import Table
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from matplotlib.ticker import NullFormatter, ScalarFormatter
from scipy.stats import binned_statistic_2d

from mdslam import selection
from mdslam.validation import (
    MIN_N_SCATTER,
    Comparison,
    binned_medians,
    compare,
    fit_gaussian,
    fit_power_law,
)

__all__ = [
    "add_data_label",
    "one_to_one",
    "cmd",
    "cv_vs_snr",
    "label_histograms",
    "pixel_hyperparameters",
    "histogram_gaussian",
    "hr_diagram",
    "binned_median_map",
    "add_isochrones",
    "DEFAULT_ISOCHRONES",
    "QIU2025_ISOCHRONES",
]

Line = tuple[np.ndarray, np.ndarray, str]


def add_data_label(fig: Figure, data_label: str) -> Figure:
    """Write ``"data: <data_label>"`` at the top left of ``fig`` and keep it in ``fig.mdslam_data_label``.

    The label is the figure's ``suptitle`` so that constrained layout keeps room for it.

    Raises
    ------
    ValueError
        If ``data_label`` is empty: every figure must name its data track.
    """
    if not data_label or not str(data_label).strip():
        raise ValueError("data_label must name the data track the figure was made from")
    fig.suptitle(f"data: {data_label}", x=0.01, ha="left", fontsize=7, color="0.3")
    fig.mdslam_data_label = str(data_label)
    return fig


def _finite(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    arrs = [np.asarray(a, float) for a in arrays]
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrs])
    return tuple(a[ok] for a in arrs)


def _draw_lines(ax, lines: Sequence[Line] | None) -> None:
    for xl, yl, lab in lines or ():
        ax.plot(xl, yl, lw=1.2, label=lab)
    if lines:
        ax.legend(fontsize=7, loc="best")


# --------------------------------------------------------------------------- #
def _median_std_title(median: float, std: float, n: int, unit: str = "") -> str:
    """"median +- std = a +- b unit (N = n)", or the median alone for n < MIN_N_SCATTER."""
    u = f" {unit}" if unit else ""
    if n < MIN_N_SCATTER:
        return f"median = {median:.3g}{u} (N = {n}, too few for a scatter)"
    return f"median \u00b1 std = {median:.3g} \u00b1 {std:.3g}{u} (N = {n})"


def _one_to_one_top(fig: Figure, ax: Axes, x: np.ndarray, y: np.ndarray, c: np.ndarray | None,
                    lims: tuple[float, float] | None, ylabel: str, color_label: str) -> None:
    """Top panel of :func:`one_to_one`: ``y`` against ``x``, the 1:1 line (default: data range), colour bar."""
    if c is None:
        sc = ax.scatter(x, y, s=4, c="C0", rasterized=True)
    else:
        sc = ax.scatter(x, y, s=4, c=c, cmap="viridis", rasterized=True)
    if lims is None and x.size:
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        lims = (lo, hi)
    if lims is not None:
        ax.plot(lims, lims, "k--", lw=1, label="1:1")
        ax.set_xlim(lims)
        ax.set_ylim(lims)
    ax.set_ylabel(ylabel)
    if lims is not None:  # the 1:1 line is the only labelled artist
        ax.legend(loc="upper left", fontsize=8)
    if c is not None:
        fig.colorbar(sc, ax=ax, label=color_label)


def _residual_panel(ax: Axes, x: np.ndarray, d: np.ndarray, bins: int | np.ndarray) -> None:
    """Residuals ``d`` against ``x`` with binned medians and standard deviations (Q25 Figs. 6-8)."""
    ax.scatter(x, d, s=3, c="0.6", rasterized=True)
    ax.axhline(0.0, color="k", lw=1, ls="--")
    if x.size:
        bm = binned_medians(x, d, bins, min_count=3)
        good = np.isfinite(np.asarray(bm["median"], float))
        ax.errorbar(np.asarray(bm["x_median"])[good], np.asarray(bm["median"])[good],
                    yerr=np.asarray(bm["std"])[good], fmt="o", mfc="white", mec="k", ecolor="k",
                    capsize=2, label="binned median \u00b1 std")
        ax.legend(fontsize=7, loc="best")


def _residual_histogram(ax: Axes, d: np.ndarray, st: Comparison, hist_bins: int,
                        hist_range: tuple[float, float] | None, unit: str) -> None:
    """Histogram of the residuals ``d`` titled "median +- std" (statistics ``st`` of :func:`compare`)."""
    u = f" [{unit}]" if unit else ""
    if hist_range is None and st.n and st.robust_std > 0:
        hist_range = (st.median - 6 * st.robust_std, st.median + 6 * st.robust_std)
    ax.hist(d, bins=hist_bins, range=hist_range, color="C0", alpha=0.7)
    ax.axvline(0.0, color="k", lw=1, ls="--")
    if st.n:
        ax.axvline(st.median, color="C3", lw=1.2)
    ax.set_xlabel(f"\u0394{u}")
    ax.set_ylabel("N")
    ax.set_title(_median_std_title(st.median, st.std, st.n, unit), fontsize=9)


def one_to_one(x: np.ndarray, y: np.ndarray, *, data_label: str, xlabel: str = "reference",
               ylabel: str = "this work", unit: str = "", color: np.ndarray | None = None,
               color_label: str = "", bins: int | np.ndarray = 8, hist_bins: int = 30,
               hist_range: tuple[float, float] | None = None,
               lims: tuple[float, float] | None = None) -> Figure:
    """One-to-one comparison with residual panel and residual histogram.

    Top: ``y`` against ``x`` with the 1:1 line. Middle: ``y - x`` against ``x``
    with binned medians and standard deviations (white circles, black bars, as
    Q25 Figs. 6-8). Bottom: histogram of ``y - x`` with "median +- std" quoted.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Reference and compared label (same unit).
    data_label : str
        The data track, written on the figure.
    xlabel, ylabel, unit : str
        Axis names and unit (e.g. ``"K"``).
    color : array_like, shape (n,), optional
        Colour the points (e.g. by SNR or [Fe/H]); adds a colour bar.
    color_label : str
        Colour-bar label.
    bins : int or array_like
        Bins of ``x`` for the medians (:func:`mdslam.validation.binned_medians`).
    hist_bins : int
        Bins of the residual histogram.
    hist_range : (float, float), optional
        Range of the histogram; default median +- 6 robust standard deviations
        of the residuals (outliers beyond are counted in the quoted statistics
        but not drawn).
    lims : (float, float), optional
        Axis limits of the top panel; default the data range.

    Returns
    -------
    Figure
        Axes: top, residual, histogram (and a colour bar when ``color`` is given).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    c = None if color is None else np.asarray(color, float)
    ok = np.isfinite(x) & np.isfinite(y) & (np.ones_like(x, bool) if c is None else np.isfinite(c))
    x, y = x[ok], y[ok]
    c = None if c is None else c[ok]
    d = y - x
    u = f" [{unit}]" if unit else ""
    fig = Figure(figsize=(5.0, 8.0), layout="constrained")
    gs = fig.add_gridspec(3, 1, height_ratios=(3, 1.6, 1.6))
    ax0 = fig.add_subplot(gs[0])
    ax1 = fig.add_subplot(gs[1], sharex=ax0)
    ax2 = fig.add_subplot(gs[2])
    _one_to_one_top(fig, ax0, x, y, c, lims, ylabel + u, color_label)
    _residual_panel(ax1, x, d, bins)
    ax1.set_xlabel(xlabel + u)
    ax1.set_ylabel(f"\u0394 ({ylabel} \u2212 {xlabel})")
    _residual_histogram(ax2, d, compare(y, x), hist_bins, hist_range, unit)
    return add_data_label(fig, data_label)


# --------------------------------------------------------------------------- #
def cmd(bp_rp: np.ndarray, mg: np.ndarray, *, data_label: str, selected: np.ndarray | None = None,
        regions: Sequence[str] = ("li2021", "qiu2025"), xlabel: str = "BP \u2212 RP [mag]",
        ylabel: str = "M$_G$ [mag]", background: tuple[np.ndarray, np.ndarray] | None = None,
        background_label: str = "comparison sample") -> Figure:
    """Colour-absolute-magnitude diagram with the papers' selection regions.

    Parameters
    ----------
    bp_rp, mg : array_like, shape (n,)
        Colour and absolute G magnitude (mag).
    data_label : str
        The data track, written on the figure.
    selected : array_like of bool, shape (n,), optional
        Stars passing the selection (red) versus the rest (blue), as Q25 Fig. 1.
    regions : sequence of {"li2021", "qiu2025"}
        Selection regions to draw: the L21 Fig. 1 quadrangle and the Q25 sec. 2.2
        criteria 1-3 region (both outlined).
    background : (bp_rp, mg), optional
        A second population drawn in grey underneath (e.g. M giants in L21 Fig. 1).
    background_label : str
        Its legend entry.

    Returns
    -------
    Figure
        One axis with inverted magnitude axis; one patch per region.
    """
    x = np.asarray(bp_rp, float)
    y = np.asarray(mg, float)
    fig = Figure(figsize=(5.5, 6.0), layout="constrained")
    ax = fig.add_subplot()
    if background is not None:
        bx, by = _finite(*background)
        ax.scatter(bx, by, s=2, c="0.75", label=background_label, rasterized=True)
    if selected is None:
        ax.scatter(x, y, s=2, c="C3", label="stars", rasterized=True)
    else:
        sel = np.asarray(selected, bool)
        ax.scatter(x[~sel], y[~sel], s=2, c="C0", label=f"rejected ({int((~sel).sum())})",
                   rasterized=True)
        ax.scatter(x[sel], y[sel], s=2, c="C3", label=f"selected ({int(sel.sum())})", rasterized=True)
    fin = np.isfinite(x) & np.isfinite(y)
    xmax = float(np.nanmax(x[fin])) if fin.any() else 5.0
    styles = {"li2021": ("k", "--", "Li+2021 quadrangle"), "qiu2025": ("C2", "-", "Qiu+2025 criteria 1-3")}
    for name in regions:
        if name == "li2021":
            verts = selection.li2021_cmd_polygon()
        elif name == "qiu2025":
            verts = selection.qiu2025_cmd_polygon(bp_rp_max=max(xmax, 5.0))
        else:
            raise ValueError(f"unknown region {name!r}; use 'li2021' or 'qiu2025'")
        col, ls, lab = styles[name]
        ax.add_patch(Polygon(verts, closed=True, fill=False, ec=col, ls=ls, lw=1.5, label=lab))
    if fin.any():  # limits from the stars, not from the (open-ended) regions
        pad_x = 0.05 * (np.ptp(x[fin]) or 1.0)
        pad_y = 0.05 * (np.ptp(y[fin]) or 1.0)
        ax.set_xlim(x[fin].min() - pad_x, x[fin].max() + pad_x)
        ax.set_ylim(y[fin].min() - pad_y, y[fin].max() + pad_y)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper right", markerscale=4)
    return add_data_label(fig, data_label)


# --------------------------------------------------------------------------- #
def cv_vs_snr(binned: Table, *, data_label: str, labels: Sequence[str] = ("label",),
              units: Sequence[str] | None = None, fits: Sequence[tuple[float, float] | None] | None = None,
              fit: bool = True, snr_col: str = "snr_median") -> Figure:
    """CV bias and CV scatter against SNR, with power-law fits (L21 Fig. 2, Q25 Fig. 5).

    Parameters
    ----------
    binned : Table
        Output of :func:`mdslam.validation.binned_bias_scatter`: ``snr_median``
        and ``bias``/``scatter`` of shape (n_bins,) or (n_bins, n_labels).
    data_label : str
        The data track, written on the figure.
    labels : sequence of str
        Label names, one panel each.
    units : sequence of str, optional
        Units per label.
    fits : sequence of (a, b) or None, optional
        Power laws ``a * SNR**b`` to draw per label (e.g. Q25 eqs. 6-8).
    fit : bool
        Fit ``scatter = a SNR^b`` per label (:func:`mdslam.validation.fit_power_law`)
        when ``fits`` does not give one; the result is quoted in the legend.
    snr_col : str
        SNR column to plot against.

    Returns
    -------
    Figure
        One axis per label; per axis a bias and a scatter series and the power law.
    """
    snr = np.asarray(binned[snr_col], float)
    bias = np.asarray(binned["bias"], float).reshape(len(snr), -1)
    scat = np.asarray(binned["scatter"], float).reshape(len(snr), -1)
    nlab = bias.shape[1]
    labels = list(labels) if len(labels) == nlab else [f"label {i}" for i in range(nlab)]
    units = list(units) if units is not None else [""] * nlab
    fig = Figure(figsize=(4.2 * nlab, 3.8), layout="constrained")
    axes = [fig.add_subplot(1, nlab, i + 1) for i in range(nlab)]
    grid = np.geomspace(max(np.nanmin(snr), 1e-3), np.nanmax(snr), 100) if snr.size else np.array([])
    for i, ax in enumerate(axes):
        ax.plot(snr, bias[:, i], "o--", color="C0", label="CV bias")
        ax.plot(snr, scat[:, i], "s:", color="C3", label="CV scatter")
        ab = fits[i] if fits is not None and i < len(fits) else None
        if ab is None and fit and np.sum(np.isfinite(scat[:, i]) & (scat[:, i] > 0)) >= 2:
            a, b, _ = fit_power_law(snr, scat[:, i])
            ab = (a, b)
        if ab is not None and grid.size:
            ax.plot(grid, ab[0] * grid ** ab[1], "-", color="C3", lw=1,
                    label=f"{ab[0]:.3g} SNR$^{{{ab[1]:.2f}}}$")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("SNR")
        ax.set_ylabel(f"{labels[i]}" + (f" [{units[i]}]" if units[i] else ""))
        ax.legend(fontsize=7)
    return add_data_label(fig, data_label)


# --------------------------------------------------------------------------- #
def label_histograms(labels: Mapping[str, np.ndarray], *, data_label: str,
                     ranges: Mapping[str, tuple[float, float]] | None = None,
                     units: Mapping[str, str] | None = None, bins: int = 20) -> Figure:
    """Histograms of the training labels with a shaded usable range (Q25 Fig. 3).

    Parameters
    ----------
    labels : mapping name -> array_like
        E.g. ``{"teff": ..., "logg": ..., "feh": ...}``.
    data_label : str
        The data track, written on the figure.
    ranges : mapping name -> (lo, hi), optional
        Shaded intervals, e.g. :data:`mdslam.selection.QIU2025_USABLE_RANGE`.
    units : mapping name -> str, optional
    bins : int

    Returns
    -------
    Figure
        One axis per label.
    """
    names = list(labels)
    fig = Figure(figsize=(3.6 * len(names), 3.4), layout="constrained")
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        (v,) = _finite(labels[name])
        ax.hist(v, bins=bins, color="C0", alpha=0.8)
        if ranges is not None and name in ranges:
            lo, hi = ranges[name]
            ax.axvspan(lo, hi, color="C2", alpha=0.15, label="usable range")
            ax.legend(fontsize=7)
        unit = (units or {}).get(name, "")
        ax.set_xlabel(name + (f" [{unit}]" if unit else ""))
        ax.set_ylabel("N")
        ax.set_title(f"N = {v.size}", fontsize=9)
    return add_data_label(fig, data_label)


# --------------------------------------------------------------------------- #
def pixel_hyperparameters(wave: np.ndarray, params: Mapping[str, np.ndarray], *, data_label: str,
                          cv_mse: np.ndarray | None = None, log: bool = True) -> Figure:
    """Per-pixel SLAM hyperparameters (C, epsilon, gamma) and CV-MSE against wavelength.

    Parameters
    ----------
    wave : array_like, shape (n_pix,)
        Wavelength in Angstrom.
    params : mapping name -> array_like, shape (n_pix,)
        Chosen hyperparameter per pixel, e.g. ``{"C": ..., "epsilon": ..., "gamma": ...}``.
    data_label : str
        The data track, written on the figure.
    cv_mse : array_like, shape (n_pix,), optional
        Cross-validated mean squared error per pixel (L21 eq. 1), an extra panel.
    log : bool
        Logarithmic y axes.

    Returns
    -------
    Figure
        One axis per hyperparameter (plus one for CV-MSE), sharing the x axis.
    """
    w = np.asarray(wave, float)
    panels = [(k, np.asarray(v, float)) for k, v in params.items()]
    if cv_mse is not None:
        panels.append(("CV-MSE", np.asarray(cv_mse, float)))
    if not panels:
        raise ValueError("give at least one hyperparameter or cv_mse")
    fig = Figure(figsize=(8.0, 1.8 * len(panels) + 0.6), layout="constrained")
    ax0 = None
    for i, (name, v) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1, sharex=ax0)
        ax0 = ax0 or ax
        ax.plot(w, v, "-", lw=0.8, color="C3" if name == "CV-MSE" else "C0")
        fin = v[np.isfinite(v)]
        if log and fin.size and np.all(fin > 0):
            ax.set_yscale("log")
        ax.set_ylabel(name)
    ax.set_xlabel("wavelength [\u00c5]")
    return add_data_label(fig, data_label)


# --------------------------------------------------------------------------- #
def histogram_gaussian(values: np.ndarray, *, data_label: str, xlabel: str = "",
                       bins: int | np.ndarray | None = None, fit: bool = True,
                       reference: tuple[float, float] | None = None,
                       vline: float | None = None, vline_label: str = "") -> Figure:
    """Histogram (as a density) with Gaussian overlays (L21 Figs. 7-9).

    Parameters
    ----------
    values : array_like, shape (n,)
        E.g. cluster members' [M/H], or uncertainty-normalised pair differences.
    data_label : str
        The data track, written on the figure.
    xlabel : str
    bins : int or array_like, optional
        Histogram bins (default as in :func:`mdslam.validation.fit_gaussian`).
    fit : bool
        Overlay the Gaussian fitted to the histogram (mu and sigma in the legend).
    reference : (mu, sigma), optional
        A reference Gaussian, e.g. ``(0, 1)`` for normalised differences.
    vline : float, optional
        A vertical line, e.g. the Hyades [Fe/H] = 0.13 of L21 Fig. 7.
    vline_label : str

    Returns
    -------
    Figure
        One axis: the histogram patches and one line per overlay.
    """
    (v,) = _finite(values)
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    if bins is None:
        rs = max(float(np.std(v)) if v.size else 1.0, 1e-12)
        med = float(np.median(v)) if v.size else 0.0
        bins = np.linspace(med - 4 * rs, med + 4 * rs, int(max(5, min(40, np.sqrt(max(v.size, 1))))) + 1)
    stats = (f"N = {v.size}, mean = {np.mean(v):.3g}, std = {np.std(v):.3g}" if v.size >= MIN_N_SCATTER
             else f"N = {v.size} (too few for a scatter)")
    _, edges, _ = ax.hist(v, bins=bins, density=True, color="C0", alpha=0.6, label=stats)
    grid = np.linspace(edges[0], edges[-1], 300)
    if fit and v.size >= 3:
        mu, sig, _ = fit_gaussian(v, bins=edges)
        ax.plot(grid, np.exp(-0.5 * ((grid - mu) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig), "C3-",
                label=f"fit: \u03bc = {mu:.2f}, \u03c3 = {sig:.2f}")
    if reference is not None:
        mu0, s0 = reference
        ax.plot(grid, np.exp(-0.5 * ((grid - mu0) / s0) ** 2) / (np.sqrt(2 * np.pi) * s0), "k--",
                label=f"\u03bc = {mu0:g}, \u03c3 = {s0:g}")
    if vline is not None:
        ax.axvline(vline, color="k", lw=1.2, label=vline_label or f"{vline:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return add_data_label(fig, data_label)


def _colour_coded(draw: Callable[[Axes], Any], colour_label: str, lines: Sequence[Line] | None,
                  xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    """A one-axis figure drawn by ``draw(ax)`` (which returns the colour mappable), with its colour bar,
    the overlaid ``lines`` and the axis labels."""
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    fig.colorbar(draw(ax), ax=ax, label=colour_label)
    _draw_lines(ax, lines)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


# --------------------------------------------------------------------------- #
def hr_diagram(x: np.ndarray, mg: np.ndarray, color: np.ndarray, *, data_label: str,
               xlabel: str = "T$_{\\rm eff}$ [K]", ylabel: str = "M$_G$ [mag]",
               color_label: str = "[M/H] [dex]", invert_x: bool = True,
               vmin: float | None = None, vmax: float | None = None,
               lines: Sequence[Line] | None = None) -> Figure:
    """HR diagram coloured by a third quantity, e.g. Teff vs M_G by [M/H] (L21 Fig. 6).

    Parameters
    ----------
    x : array_like, shape (n,)
        Teff (K; axis inverted by default) or a colour (pass ``invert_x=False``).
    mg : array_like, shape (n,)
        Absolute G magnitude (axis inverted).
    color : array_like, shape (n,)
        Colour-coding quantity, e.g. [M/H].
    data_label : str
        The data track, written on the figure.
    lines : sequence of (x, y, label), optional
        Curves to overlay, e.g. isochrones.

    Returns
    -------
    Figure
        The diagram axis and a colour-bar axis.
    """
    xx, yy, cc = _finite(x, mg, color)
    fig, ax = _colour_coded(
        lambda ax: ax.scatter(xx, yy, c=cc, s=3, cmap="viridis", vmin=vmin, vmax=vmax, rasterized=True),
        color_label, lines, xlabel, ylabel)
    ax.invert_yaxis()
    if invert_x:
        ax.invert_xaxis()
    return add_data_label(fig, data_label)


# --------------------------------------------------------------------------- #
def binned_median_map(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, data_label: str,
                      bins: int | Sequence = 30, min_count: int = 3,
                      xlabel: str = "(BP \u2212 RP)$_0$ [mag]", ylabel: str = "M$_{G,0}$ [mag]",
                      zlabel: str = "median [Fe/H] [dex]", invert_y: bool = True,
                      vmin: float | None = None, vmax: float | None = None,
                      lines: Sequence[Line] | None = None) -> Figure:
    """Median of ``z`` in 2-D bins of (x, y) (Q25 Figs. 10-11).

    Parameters
    ----------
    x, y, z : array_like, shape (n,)
        Coordinates and the quantity whose per-bin median is shown.
    data_label : str
        The data track, written on the figure.
    bins : int or sequence
        As for :func:`scipy.stats.binned_statistic_2d`.
    min_count : int
        Bins with fewer stars are left blank.
    lines : sequence of (x, y, label), optional
        Curves to overlay, e.g. PARSEC isochrones.

    Returns
    -------
    Figure
        The map axis (one QuadMesh) and a colour-bar axis; ``fig.mdslam_map``
        holds ``(median, x_edges, y_edges, count)``.
    """
    xx, yy, zz = _finite(x, y, z)
    med, xe, ye, _ = binned_statistic_2d(xx, yy, zz, statistic="median", bins=bins)
    cnt, _, _, _ = binned_statistic_2d(xx, yy, zz, statistic="count", bins=[xe, ye])
    med = np.where(cnt >= min_count, med, np.nan)
    fig, ax = _colour_coded(lambda ax: ax.pcolormesh(xe, ye, med.T, cmap="viridis", vmin=vmin, vmax=vmax),
                            zlabel, lines, xlabel, ylabel)
    if invert_y:
        ax.invert_yaxis()
    fig.mdslam_map = (med, xe, ye, cnt)
    return add_data_label(fig, data_label)


# --------------------------------------------------------------------------- #
#: (age in Gyr, [M/H]) of the isochrones drawn by default: PARSEC grid nodes.
DEFAULT_ISOCHRONES: tuple[tuple[float, float], ...] = ((1.0, 0.0), (5.0, -0.5), (5.0, 0.25))
#: Qiu 2025 Fig. 11: log(age/yr) = 9.5 at [M/H] = +0.3, 0, -0.3, -0.6 (read at the nearest
#: PARSEC nodes +0.25, 0, -0.25, -0.5).
QIU2025_ISOCHRONES: tuple[tuple[float, float], ...] = tuple((10 ** 0.5, m) for m in (0.3, 0.0, -0.3, -0.6))


def add_isochrones(fig: Figure, isochrones: Sequence[Table | tuple[float, float]] | None = None, *,
                   x: str = "BP_RP",
                   y: str = "G", min_logg: float = 4.0, ax_index: int = 0,
                   keep_limits: bool = True) -> Figure:
    """Overlay PARSEC isochrones on the first axis of a CMD or HR diagram.

    Parameters
    ----------
    fig : Figure
        From :func:`cmd` or :func:`hr_diagram` (axes in absolute magnitude; the
        isochrones are absolute magnitudes, so the stars must be too).
    isochrones : sequence of Table or of (age_gyr, mh), optional
        Tables from :func:`mdslam.isochrones.parsec_isochrone`, or (age in Gyr, [M/H])
        pairs read with it (dwarf part, log g >= ``min_logg``); default
        :data:`DEFAULT_ISOCHRONES` (1 Gyr at [M/H] = 0, 5 Gyr at -0.5 and +0.25).
        :data:`QIU2025_ISOCHRONES` gives those of Q25 Fig. 11.
    x, y : str
        Isochrone columns for the axes: ``"BP_RP"`` or ``"teff"``; ``"G"``.
    min_logg : float
        Dwarf cut for the default isochrones.
    ax_index : int
        Which axis of ``fig`` to draw on (0: the diagram, not the colour bar).
    keep_limits : bool
        Keep the axis limits set by the stars.

    Returns
    -------
    Figure
        The same figure, with one line per isochrone in the legend and the data
        label extended by the isochrones' source.
    """
    from mdslam.isochrones import parsec_isochrone

    isochrones = [i if isinstance(i, Table) else parsec_isochrone(i[0], i[1], min_logg=min_logg)
                  for i in (DEFAULT_ISOCHRONES if isochrones is None else isochrones)]
    ax = fig.axes[ax_index]
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    styles = ("-", "--", ":", "-.")
    for k, iso in enumerate(isochrones):
        lab = (f"PARSEC {iso.meta.get('AGE_GYR', np.nan):.1f} Gyr, "
               f"[M/H] = {iso.meta.get('MH', np.nan):+.2f}")
        ax.plot(np.asarray(iso[x], float), np.asarray(iso[y], float), color="k" if k == 0 else f"C{k + 2}",
                ls=styles[k % len(styles)], lw=1.3, label=lab)
    if keep_limits:
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
    ax.legend(fontsize=7, loc="upper right", markerscale=4)
    src = next((str(i.meta["SOURCE"]) for i in isochrones if "SOURCE" in i.meta), "PARSEC")
    base = getattr(fig, "mdslam_data_label", "")
    return add_data_label(fig, f"{base}; isochrones: {src}" if base else f"isochrones: {src}")
