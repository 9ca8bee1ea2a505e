"""PARSEC isochrones with MIST bolometric corrections, read from the installed registry packages."""

import importlib.util
import io

import numpy as np
import pytest

from mdslam import datasets

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lachesis_grids") is None or importlib.util.find_spec("lachesis") is None
    or importlib.util.find_spec("h5py") is None,
    reason="needs `pip install lachesis-grids h5py` and `pip install --no-deps astrolachesis` "
           "(the PARSEC grid and the MIST bolometric corrections ship inside them)")


def test_registry_finds_both_files_inside_the_packages():
    for name, pkg in (("parsec_isochrones", "lachesis_grids"), ("mist_bolometric_corrections", "lachesis")):
        (path,) = datasets.fetch(name)  # sha256-verified
        assert pkg in str(path) and path.suffix == ".h5"


def test_grid_axes_are_the_parsec_nodes():
    from mdslam import isochrones

    feh, logage = isochrones.parsec_grid_axes()
    np.testing.assert_allclose(feh, np.arange(-2.0, 0.51, 0.25))
    assert logage[0] == pytest.approx(5.0) and logage[-1] == pytest.approx(10.25)
    np.testing.assert_allclose(np.diff(logage), 0.05, atol=1e-9)


def test_bolometric_correction_is_linear_between_table_nodes():
    import h5py

    from mdslam import isochrones

    (path,) = datasets.fetch("mist_bolometric_corrections")
    with h5py.File(path) as h:
        g = h["UBVRIplus"]
        bands = [b.decode() for b in g["band_names"][:]]
        k0 = list(g["feh_values"][:]).index(0.0)
        raw = g["data"][k0]
    j = 5 + bands.index("Gaia_G_EDR3")

    def node(teff, logg):
        row = raw[(raw[:, 0] == teff) & (raw[:, 1] == logg) & (raw[:, 3] == 0.0)]
        return float(row[0, j])

    # at a node: the table value itself
    assert isochrones.mist_bc(3500.0, 5.0, 0.0)["G"] == pytest.approx(node(3500.0, 5.0), abs=1e-9)
    # half way between Teff nodes 3200 and 3500 K at log g 5: the mean of the two
    mid = 0.5 * (node(3200.0, 5.0) + node(3500.0, 5.0))
    assert isochrones.mist_bc(3350.0, 5.0, 0.0)["G"] == pytest.approx(mid, abs=1e-9)
    # outside the table: NaN, never extrapolated
    assert np.isnan(isochrones.mist_bc(2000.0, 5.0, 0.0)["G"])


def test_solar_isochrone_is_a_plausible_m_dwarf_main_sequence():
    from mdslam import isochrones

    iso = isochrones.parsec_isochrone(1.0, 0.0, min_logg=4.0)
    assert iso.meta["LOGAGE"] == pytest.approx(9.0) and iso.meta["MH"] == 0.0
    assert (np.diff(iso["initial_mass"]) >= 0).all() and (iso["logg"] >= 4.0).all()
    # M_G = M_bol - BC_G by construction
    m = np.isfinite(iso["G"])
    bc = isochrones.mist_bc(iso["teff"][m], iso["logg"][m], 0.0)["G"]
    np.testing.assert_allclose(iso["G"][m], iso["mbol"][m] - bc)
    # the M dwarf sequence: fainter and redder towards low mass; at 0.3 Msun M_G ~ 11,
    # BP-RP ~ 2.7 (Gaia DR2 HRD of nearby M dwarfs: M_G ~ 10.2 at BP-RP 2.5, ~ 11.8 at 3.0)
    low = m & (iso["initial_mass"] < 0.6) & (iso["initial_mass"] > 0.15)
    assert (np.diff(np.asarray(iso["G"])[low]) < 0).all()
    i = np.argmin(np.abs(iso["initial_mass"] - 0.3))
    assert 10.5 < iso["G"][i] < 11.5 and 2.5 < iso["BP_RP"][i] < 2.9
    mg_at = np.interp([2.5, 3.0], np.asarray(iso["BP_RP"])[low][::-1], np.asarray(iso["G"])[low][::-1])
    np.testing.assert_allclose(mg_at, [10.2, 11.8], atol=0.3)
    # metal-poor isochrone lies below (fainter at a given colour)
    poor = isochrones.parsec_isochrone(5.0, -0.5, min_logg=4.0)
    mp = np.isfinite(poor["G"]) & (poor["initial_mass"] < 0.6)
    assert np.interp(2.5, np.asarray(poor["BP_RP"])[mp][::-1], np.asarray(poor["G"])[mp][::-1]) > mg_at[0] + 0.5


def test_requests_snap_to_nodes_within_half_a_step_only():
    from mdslam import isochrones

    assert isochrones.parsec_isochrone(5.0, 0.3).meta["MH"] == 0.25       # 0.3 -> +0.25 node
    assert isochrones.parsec_isochrone(5.0, 0.0).meta["LOGAGE"] == pytest.approx(9.7)
    with pytest.raises(ValueError, match="outside the PARSEC grid"):
        isochrones.parsec_isochrone(5.0, 1.0)
    with pytest.raises(ValueError, match="outside the PARSEC grid"):
        isochrones.parsec_isochrone(30.0, 0.0)


@pytest.mark.skipif(importlib.util.find_spec("stelpar") is None,
                    reason="stelpar not installed (`make install` adds it: `pip install --no-deps stelpar==1.0.0`)")
def test_mist_colours_agree_with_parsec_own_magnitudes_from_stelpar():
    """stelpar ships PARSEC isochrones with PARSEC's Gaia magnitudes for 1-500 Myr (one metallicity)."""
    import gzip

    from mdslam import isochrones

    spec = importlib.util.find_spec("stelpar")
    path = next(iter(spec.submodule_search_locations)) + "/datafiles/parsec_grid.csv.gz"
    with gzip.open(path) as fh:
        a = np.genfromtxt(io.BytesIO(fh.read()), delimiter=",", names=True)
    ref = a[a["age"] == 500.0]
    iso = isochrones.parsec_isochrone(0.5, 0.0, min_logg=4.0)
    for mass in (0.2, 0.3, 0.4, 0.5):
        i = np.argmin(np.abs(ref["mass"] - mass))
        j = np.argmin(np.abs(iso["initial_mass"] - mass))
        assert iso["G"][j] == pytest.approx(ref["gaia_gmag"][i], abs=0.1)
        assert iso["BP_RP"][j] == pytest.approx(ref["gaia_bpmag"][i] - ref["gaia_rpmag"][i], abs=0.12)
