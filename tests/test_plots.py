"""The figure functions return Figures with the expected axes, artists and data-track label."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection, QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from mdslam import plots, selection, validation  # noqa: E402

LABEL = "mock track (test data)"
rng = np.random.default_rng(0)


def _labels_on(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.texts]


def _check(fig: Figure, tmp_path, n_axes: int) -> None:
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    assert f"data: {LABEL}" in _labels_on(fig)
    assert fig.mdslam_data_label == LABEL
    fig.savefig(tmp_path / "fig.png", dpi=40)
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_data_label_is_required():
    with pytest.raises(ValueError, match="data track"):
        plots.histogram_gaussian(rng.normal(size=10), data_label=" ")


def test_one_to_one(tmp_path):
    x = rng.uniform(3000, 4000, 300)
    y = x + rng.normal(-27, 92, 300)
    fig = plots.one_to_one(x, y, data_label=LABEL, xlabel="Teff ref", ylabel="Teff SLAM", unit="K")
    _check(fig, tmp_path, 3)
    top, resid, hist = fig.axes
    assert len(top.collections) == 1 and len(top.collections[0].get_offsets()) == 300
    assert any(line.get_label() == "1:1" for line in top.get_lines())
    assert len(resid.containers) == 1  # binned medians with error bars
    assert len(hist.patches) == 30
    st = validation.compare(y, x)
    assert f"{st.median:.3g}" in hist.get_title()
    fig = plots.one_to_one(x, y, data_label=LABEL, color=rng.uniform(5, 50, 300), color_label="SNR")
    assert len(fig.axes) == 4  # plus the colour bar


def test_cmd_draws_both_regions(tmp_path):
    bp_rp = rng.uniform(1, 4.5, 500)
    mg = 3.3 * bp_rp + 1.5 + rng.normal(0, 0.5, 500)
    sel = selection.in_qiu2025_cmd(bp_rp, mg)
    fig = plots.cmd(bp_rp, mg, data_label=LABEL, selected=sel)
    _check(fig, tmp_path, 1)
    ax = fig.axes[0]
    polys = [p for p in ax.patches if isinstance(p, Polygon)]
    assert len(polys) == 2
    np.testing.assert_allclose(polys[0].get_xy()[:4], selection.li2021_cmd_polygon())
    assert ax.yaxis_inverted()
    offsets = [len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)]
    assert sorted(offsets) == sorted([int((~sel).sum()), int(sel.sum())])
    with pytest.raises(ValueError, match="unknown region"):
        plots.cmd(bp_rp, mg, data_label=LABEL, regions=("bochanski",))


def test_cv_vs_snr_two_labels(tmp_path):
    snr = rng.uniform(2, 20, 240)
    truth = np.column_stack([rng.uniform(3000, 4000, 240), rng.uniform(-0.5, 0.3, 240)])
    noise = np.column_stack([388.88 * snr**-0.47, 0.34 * snr**-0.25]) * rng.normal(size=(240, 2))
    binned = validation.binned_bias_scatter(snr, truth + noise, truth, n_bins=6)
    fig = plots.cv_vs_snr(binned, data_label=LABEL, labels=("Teff", "[Fe/H]"), units=("K", "dex"),
                          fits=[(388.88, -0.47), None])
    _check(fig, tmp_path, 2)
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        # bias, scatter, power law, zero line
        assert len(ax.get_lines()) == 4
    assert fig.axes[0].get_lines()[2].get_label() == "389 SNR$^{-0.47}$"
    # [Fe/H]: no law given, so the scatter is fitted; its exponent comes out near eq. 6's -0.25
    lab = fig.axes[1].get_lines()[2].get_label()
    exponent = float(lab.split("{")[1].rstrip("}$"))
    assert -0.6 < exponent < 0.0


def test_label_histograms(tmp_path):
    labels = {"teff": rng.uniform(2900, 4200, 200), "logg": rng.uniform(4.4, 5.1, 200),
              "feh": rng.uniform(-1, 0.5, 200)}
    fig = plots.label_histograms(labels, data_label=LABEL, ranges=selection.QIU2025_USABLE_RANGE,
                                 units={"teff": "K"}, bins=15)
    _check(fig, tmp_path, 3)
    for ax in fig.axes:
        # 15 bars + the shaded usable range
        assert len(ax.patches) == 16
    assert fig.axes[0].get_xlabel() == "teff [K]"


def test_pixel_hyperparameters(tmp_path):
    wave = np.linspace(3800, 9000, 400)
    params = {"C": 10 ** rng.uniform(-1, 2, 400), "epsilon": np.full(400, 0.05), "gamma": np.full(400, 1.0)}
    fig = plots.pixel_hyperparameters(wave, params, data_label=LABEL, cv_mse=rng.uniform(1e-4, 1e-2, 400))
    _check(fig, tmp_path, 4)
    assert [ax.get_ylabel() for ax in fig.axes] == ["C", "epsilon", "gamma", "CV-MSE"]
    assert fig.axes[0].get_yscale() == "log"


def test_histogram_gaussian(tmp_path):
    z = rng.normal(0, 0.8, 2000)
    fig = plots.histogram_gaussian(z, data_label=LABEL, xlabel="\u0394[M/H]/\u03c3", reference=(0, 1),
                                   vline=0.13, vline_label="Hyades [Fe/H]")
    _check(fig, tmp_path, 1)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(lab.startswith("fit:") for lab in labels) and "\u03bc = 0, \u03c3 = 1" in labels
    assert "Hyades [Fe/H]" in labels
    fit_label = next(lab for lab in labels if lab.startswith("fit:"))
    assert float(fit_label.split("\u03c3 = ")[1]) == pytest.approx(0.8, abs=0.06)


def test_hr_diagram(tmp_path):
    teff = rng.uniform(3000, 4000, 300)
    mg = 30 - 0.0055 * teff + rng.normal(0, 0.3, 300)
    iso = (np.linspace(3000, 4000, 10), np.linspace(13.5, 8.0, 10), "PARSEC [M/H]=0")
    fig = plots.hr_diagram(teff, mg, rng.uniform(-0.5, 0.3, 300), data_label=LABEL, lines=[iso])
    _check(fig, tmp_path, 2)  # diagram + colour bar
    ax = fig.axes[0]
    assert ax.xaxis_inverted() and ax.yaxis_inverted()
    assert ax.get_lines()[0].get_label() == "PARSEC [M/H]=0"


def test_binned_median_map(tmp_path):
    x = rng.uniform(1.5, 4.0, 3000)
    y = 3.4 * x + 1.0 + rng.normal(0, 0.4, 3000)
    z = 0.2 * (y - 3.4 * x - 1.0)  # brighter at fixed colour -> more metal-rich
    fig = plots.binned_median_map(x, y, z, data_label=LABEL, bins=10, min_count=5)
    _check(fig, tmp_path, 2)
    ax = fig.axes[0]
    assert sum(isinstance(c, QuadMesh) for c in ax.collections) == 1
    med, xe, ye, cnt = fig.mdslam_map
    assert med.shape == (10, 10) and len(xe) == 11 and cnt.sum() == 3000
    assert np.all(np.isnan(med[cnt < 5]))


def test_add_isochrones_overlays_tables_and_keeps_the_star_limits(tmp_path):
    from astropy.table import Table

    bp_rp = rng.uniform(1.8, 3.2, 200)
    mg = 3.2 * bp_rp + 2.2 + rng.normal(0, 0.3, 200)
    fig = plots.hr_diagram(bp_rp, mg, rng.uniform(-0.5, 0.3, 200), data_label=LABEL, invert_x=False)
    limits = (fig.axes[0].get_xlim(), fig.axes[0].get_ylim())
    isos = []
    for age, mh, off in ((1.0, 0.0, 0.0), (5.0, -0.5, 0.8)):
        t = Table({"BP_RP": np.linspace(1.0, 4.5, 20), "teff": np.linspace(4200, 2600, 20)})
        t["G"] = 3.2 * t["BP_RP"] + 2.2 + off
        t.meta.update(AGE_GYR=age, MH=mh, SOURCE="PARSEC test")
        isos.append(t)
    out = plots.add_isochrones(fig, isos)
    assert out is fig
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["PARSEC 1.0 Gyr, [M/H] = +0.00", "PARSEC 5.0 Gyr, [M/H] = -0.50"]
    assert (fig.axes[0].get_xlim(), fig.axes[0].get_ylim()) == limits   # isochrones do not rescale
    assert fig.mdslam_data_label == f"{LABEL}; isochrones: PARSEC test"
    assert f"data: {LABEL}; isochrones: PARSEC test" in _labels_on(fig)
    fig.savefig(tmp_path / "fig.png", dpi=40)
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_no_scatter_is_quoted_for_fewer_than_five_values(tmp_path):
    x = np.array([0.0, 0.1, 0.2, 0.3])
    y = x + np.array([0.05, -0.02, 0.10, 0.0])
    hist = plots.one_to_one(x, y, data_label=LABEL).axes[2]
    assert "too few for a scatter" in hist.get_title() and "std" not in hist.get_title()
    assert "median = 0.025" in hist.get_title()       # median of 0.05, -0.02, 0.10, 0.00
    def legend(ax):
        return [t.get_text() for t in ax.get_legend().get_texts()]

    assert any("too few for a scatter" in t for t in legend(plots.histogram_gaussian(y, data_label=LABEL,
                                                                                     fit=False).axes[0]))
    # five values: mean and std are quoted (std of 0..4 = sqrt(2))
    assert any("std = 1.41" in t for t in legend(plots.histogram_gaussian(np.arange(5.0), data_label=LABEL,
                                                                          fit=False).axes[0]))
