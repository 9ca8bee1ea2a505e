"""The mock survey: labels, SNR, activity, RV, noise and defects drawn for
:class:`MockSurvey` spectra rendered from the template basis (:mod:`mdslam.mock.basis`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from ..constants import C_KMS
from ..relations import DWARF_TEFF_RANGE, active_fraction_west2011, logg_from_teff, teff_to_spt
from ..spectra import Spectra
from .basis import (
    _BLOCK,
    _OVERSAMPLE,
    _PAD,
    _SURVEY_BLOCK,
    I_BAND,
    SURVEYS,
    TEMPLATE_RESOLUTION,
    _build_basis,
)

TEFF_RANGE: tuple[float, float] = DWARF_TEFF_RANGE
"""Teff domain of the mock (K): :func:`~mdslam.relations.spt_to_teff` of M9V and M0V (2385-3833 K)."""

FEH_RANGE: tuple[float, float] = (-1.5, 0.5)
"""[M/H] domain of the mock (dex): usdM class centre to a mild extrapolation above solar."""


@lru_cache(maxsize=1)
def _b20_labels() -> tuple[np.ndarray, np.ndarray]:
    """(TEFF, FE_H) of every B20 Table 6 star with both values (-9999 = missing)."""
    from .. import datasets

    tab = datasets.load("birky2020_table6_full")
    teff = np.asarray(tab["TEFF"], float)
    feh = np.asarray(tab["FE_H"], float)
    ok = np.isfinite(teff) & np.isfinite(feh) & (teff > -9000) & (feh > -9000)
    return teff[ok], feh[ok]


# --------------------------------------------------------------------------- #
# the survey
# --------------------------------------------------------------------------- #
_TRUTH_COLUMNS = {
    "teff_true": ("K", "effective temperature"),
    "feh_true": ("dex", "[M/H] (the metallicity response scale; B20 FE_H when drawn)"),
    "logg_true": ("dex", "log10 g [cm s^-2] from the main-sequence relation (not in the flux)"),
    "spt_true": ("", "M subtype from teff_true (Pecaut & Mamajek 2013)"),
    "snr_true": ("", "median per-pixel S/N in 6800-8300 A asked for"),
    "rv_true": ("km / s", "radial velocity applied"),
    "active": ("", "H-alpha emission added"),
    "halpha_ew_true": ("Angstrom", "H-alpha emission equivalent width added (positive = emission)"),
    "n_cosmic": ("", "cosmic-ray spikes added (not masked)"),
    "n_bad": ("", "dead pixels (mask True, ivar 0, flux 0)"),
}


def _check_range(name: str, value: tuple[float, float] | None,
                 limits: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return limits
    lo, hi = float(value[0]), float(value[1])
    if not limits[0] <= lo < hi <= limits[1]:
        raise ValueError(f"{name} {value} must lie within {limits}")
    return lo, hi


@dataclass(frozen=True)
class MockConfig:
    """The options of a :class:`MockSurvey`, validated once (see its parameters).

    Ranges and probabilities are checked on construction; ``teff_range`` and
    ``feh_range`` default to the whole mock domain (:data:`TEFF_RANGE`,
    :data:`FEH_RANGE`).
    """

    resolution: float | None = None
    labels: str | Table = "b20"
    teff_range: tuple[float, float] | None = None
    feh_range: tuple[float, float] | None = None
    label_jitter: tuple[float, float] = (20.0, 0.02)
    snr_median: float = 30.0
    snr_sigma: float = 0.75
    snr_range: tuple[float, float] = (5.0, 1000.0)
    noise_model: Literal["photon", "constant"] = "photon"
    rv_mean: float = 0.0
    rv_sigma: float = 0.0
    rv_max: float = 500.0
    active_fraction: str | float = "west2011"
    calib_sigma: float = 0.05
    flux_level: tuple[float, float] = (200.0, 5000.0)
    cosmic_rate: float = 2.0
    bad_pixel_rate: float = 1e-3
    logg_scatter: float = 0.0
    response_smoothing_kms: float = 40.0

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        put("teff_range", _check_range("teff_range", self.teff_range, TEFF_RANGE))
        put("feh_range", _check_range("feh_range", self.feh_range, FEH_RANGE))
        if isinstance(self.labels, str) and self.labels not in ("b20", "uniform"):
            raise ValueError(f"labels must be 'b20', 'uniform' or a Table, not {self.labels!r}")
        for name in ("label_jitter", "snr_range", "flux_level"):
            v = getattr(self, name)
            put(name, (float(v[0]), float(v[1])))
        for name in ("snr_median", "snr_sigma", "rv_mean", "rv_sigma", "rv_max", "calib_sigma",
                     "cosmic_rate", "bad_pixel_rate", "logg_scatter", "response_smoothing_kms"):
            put(name, float(getattr(self, name)))
        if self.noise_model not in ("photon", "constant"):
            raise ValueError(f"noise_model must be 'photon' or 'constant', not {self.noise_model!r}")
        if not 0 <= self.rv_max <= 500.0:
            raise ValueError("rv_max must be in [0, 500] km/s (the grid margin)")
        if not (self.active_fraction == "west2011" or 0 <= float(self.active_fraction) <= 1):
            raise ValueError("active_fraction must be 'west2011' or a probability")


class MockSurvey:
    """A mock LAMOST or BOSS survey of M dwarfs with known truth (see the module docstring).

    Parameters
    ----------
    survey : {"lamost", "boss"}
        Pixel lattice and resolving power (:data:`SURVEYS`).
    seed : int
        Seed of every random draw; same seed, same arrays.
    config : MockConfig, optional
        All the options below at once (validated); otherwise give them as keywords.
    resolution : float, optional
        Override the survey's resolving power (must be <= 2000, the templates').
    labels : "b20", "uniform" or Table
        Where (Teff, [M/H]) come from in :meth:`generate`: B20 Table 6's joint
        distribution (default), uniform over the domain, or a table with
        columns ``teff`` and ``feh`` (or ``TEFF``/``FE_H``) to resample.
    teff_range, feh_range : (float, float), optional
        Label domain (K, dex), within :data:`TEFF_RANGE` x :data:`FEH_RANGE`;
        catalogue rows outside are dropped (truncation, not clipping).
    label_jitter : (float, float)
        Gaussian smoothing (K, dex) of resampled catalogue labels, so 10^6
        spectra do not repeat 10^4 label pairs; jittered values are clipped
        to the domain.
    snr_median, snr_sigma, snr_range
        Log-normal SNR distribution: median, sigma of ln SNR, truncation.
    noise_model : {"photon", "constant"}
        ``sigma = sqrt(F F_i) / SNR`` or ``sigma = F / SNR``.
    rv_mean, rv_sigma, rv_max : float
        Radial velocities (km/s) ~ N(rv_mean, rv_sigma) clipped to +-rv_max
        (rv_max <= 500). ``rv_sigma = 0`` (default): rest frame.
    active_fraction : "west2011" or float
        Probability of H-alpha emission: :func:`active_fraction_west2011`
        of the subtype, or a constant.
    calib_sigma : float
        Standard deviation of the Legendre P1, P2 coefficients of the
        multiplicative flux-calibration error (ln units).
    flux_level : (float, float)
        Median flux in 6800-8300 A drawn log-uniform in this range (arbitrary units).
    cosmic_rate : float
        Mean number of cosmic-ray spikes per spectrum (Poisson), 5-50 sigma high.
    bad_pixel_rate : float
        Fraction of dead pixels (Binomial per spectrum).
    logg_scatter : float
        Gaussian scatter (dex) added to :func:`logg_from_teff` for ``logg_true``.
    response_smoothing_kms : float
        Gaussian sigma (km/s) smoothing the metallicity response (widened
        where the templates are faint, see the module docstring).

    Notes
    -----
    ``generate(n)`` holds ``n x n_pix`` float64 flux and ivar and a bool mask
    (~3600 px: 62 kB per spectrum); use :meth:`iter_chunks` for 10^5-10^6
    spectra.

    Examples
    --------
    >>> ms = MockSurvey("lamost", seed=1)                       # doctest: +SKIP
    >>> spectra, truth = ms.generate(1000)                      # doctest: +SKIP
    >>> for chunk, chunk_truth in ms.iter_chunks(100_000, 4096):  # doctest: +SKIP
    ...     pass  # preprocess, predict, compare with chunk_truth
    >>> one = ms.spectrum(teff=3300, feh=-0.4, snr=50, rv=25.0)  # doctest: +SKIP
    """

    def __init__(self, survey: Literal["lamost", "boss"] = "lamost", seed: int = 0,
                 *, config: MockConfig | None = None, **options: Any) -> None:
        if survey not in SURVEYS:
            raise ValueError(f"survey must be one of {sorted(SURVEYS)}, not {survey!r}")
        if config is not None and options:
            raise ValueError("give either config=MockConfig(...) or keyword options, not both")
        self.survey = survey
        self.grid = SURVEYS[survey]
        self.seed = int(seed)
        self.config = config if config is not None else MockConfig(**options)
        self.resolution = float(self.config.resolution if self.config.resolution is not None
                                else self.grid.resolution)
        if not 0 < self.resolution <= TEMPLATE_RESOLUTION:
            raise ValueError(
                f"resolution {self.resolution} must be in (0, {TEMPLATE_RESOLUTION}] "
                "(the templates cannot be sharpened)"
            )
        self._basis = _build_basis(survey, self.resolution, self.config.response_smoothing_kms)
        self._pool: tuple[np.ndarray, np.ndarray] | None = None
        self._block_cache: tuple[tuple[int, bool], dict[str, Any]] | None = None
        self._n_calls = 0
        wave = self._basis.wave
        self._iband = (wave >= I_BAND[0]) & (wave <= I_BAND[1])
        t = np.linspace(-1.0, 1.0, wave.size)
        self._legendre = np.stack([t, 0.5 * (3 * t**2 - 1)])  # (2, n_pix)

    def params(self) -> dict[str, Any]:
        """The keyword arguments that make this survey again: ``MockSurvey(**ms.params())``."""
        return {"survey": self.survey, "seed": self.seed, **dataclasses.asdict(self.config)}

    def __getattr__(self, name: str) -> Any:
        """The options (``snr_median``, ``teff_range``, ...) read through :attr:`config`."""
        config = self.__dict__.get("config")
        if config is not None and name in MockConfig.__dataclass_fields__:
            return getattr(config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ #
    @property
    def wavelength(self) -> np.ndarray:
        """Mock wavelength grid, vacuum Angstrom, shape (n_pix,)."""
        return self._basis.wave

    @property
    def n_pix(self) -> int:
        """Number of pixels per spectrum."""
        return self._basis.wave.size

    def describe(self) -> str:
        """A caption-ready paragraph saying what these spectra are (starts with 'MOCK')."""
        g = self.grid
        labels = self.labels if isinstance(self.labels, str) else "a user table"
        return (
            f"MOCK {g.name.upper()}-like spectra (not real data): R = {self.resolution:.0f}, "
            f"{self.n_pix} log-lambda pixels of {g.velocity_per_pixel:.1f} km/s, "
            f"{self.wavelength[0]:.0f}-{self.wavelength[-1]:.0f} A (vacuum). Semi-empirical: "
            "PCHIP interpolation in ln flux of the Bochanski et al. (2007) M0-M9 SDSS composites "
            "in spectral type, plus a per-pixel ln-flux metallicity response, a cubic spline in "
            "[M/H] through responses fitted to the Kesseli et al. (2019) sdM/esdM/usdM spectra "
            "(classes placed at -0.5/-1.0/-1.5 dex). Teff-SpT and log g from Pecaut & Mamajek "
            "(2013). "
            f"Labels: {labels} (Teff {self.teff_range[0]:.0f}-{self.teff_range[1]:.0f} K, "
            f"[M/H] {self.feh_range[0]:+.1f} to {self.feh_range[1]:+.1f}); SNR log-normal "
            f"(median {self.snr_median:g}, sigma_ln {self.snr_sigma:g}); {self.noise_model} "
            f"noise; rv ~ N({self.rv_mean:g}, {self.rv_sigma:g}) km/s; seed {self.seed}."
        )

    # ------------------------------------------------------------------ #
    def model(
        self, teff: ArrayLike, feh: ArrayLike, rv: ArrayLike = 0.0, halpha_ew: ArrayLike = 0.0
    ) -> np.ndarray:
        """Noiseless mock flux on the survey grid, before calibration error and scaling.

        Parameters
        ----------
        teff : array_like
            Effective temperature, K, within the mock's Teff domain.
        feh : array_like
            [M/H], dex, within :data:`FEH_RANGE`.
        rv : array_like
            Radial velocity, km/s (absolute value at most 500).
        halpha_ew : array_like
            H-alpha emission equivalent width, Angstrom (>= 0).

        Returns
        -------
        ndarray, shape (m, n_pix)
            Flux (median ~1 in 6800-8300 A for the dwarf sequence), ``m`` the
            broadcast size of the inputs.
        """
        teff_a, feh_a, rv_a, ew_a = (
            np.atleast_1d(np.asarray(v, float))
            for v in np.broadcast_arrays(teff, feh, rv, halpha_ew)
        )
        self._check_labels(teff_a, feh_a, rv_a)
        return self._model_block(teff_to_spt(teff_a), feh_a, rv_a, ew_a)

    def _check_labels(self, teff: np.ndarray, feh: np.ndarray, rv: np.ndarray) -> None:
        if np.any(~np.isfinite(teff)) or np.any((teff < TEFF_RANGE[0]) | (teff > TEFF_RANGE[1])):
            raise ValueError(f"teff outside the mock's domain {TEFF_RANGE} K")
        if np.any(~np.isfinite(feh)) or np.any((feh < FEH_RANGE[0]) | (feh > FEH_RANGE[1])):
            raise ValueError(f"feh outside the mock's domain {FEH_RANGE} dex")
        if np.any(np.abs(rv) > 500.0):
            raise ValueError("|rv| must be <= 500 km/s")

    def _model_block(
        self, spt: np.ndarray, feh: np.ndarray, rv: np.ndarray, ew: np.ndarray
    ) -> np.ndarray:
        """Noiseless flux (m, n_pix) on the survey grid: fine-grid model, H-alpha, shift, binning."""
        b = self._basis
        f = np.exp(b.logflux(spt, feh))  # float32, (m, n_fine)
        if np.any(ew != 0):
            cont = f[:, b.halpha_index]
            f += (ew * cont).astype(np.float32)[:, None] * b.halpha_profile[None, :]
        if np.any(rv != 0):
            f = _shift_rows(f, np.log10(1.0 + rv / C_KMS) / b.dloglam_fine)
        coarse = f[:, 0::_OVERSAMPLE].copy()
        for q in range(1, _OVERSAMPLE):
            coarse += f[:, q::_OVERSAMPLE]
        coarse *= np.float32(1.0 / _OVERSAMPLE)
        return coarse[:, _PAD:-_PAD].astype(np.float64)

    # ------------------------------------------------------------------ #
    # random draws
    # ------------------------------------------------------------------ #
    def _rng(self, *key: int) -> np.random.Generator:
        """A generator seeded by ``SeedSequence(seed, spawn_key=key)``."""
        return np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=key))
        )

    def label_pool(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(teff, feh) rows that :meth:`generate` resamples, inside the domain.

        Returns
        -------
        (ndarray, ndarray) or None
            Teff (K) and [M/H] (dex) of the catalogue rows kept, or None for
            ``labels="uniform"``.
        """
        if self._pool is not None or isinstance(self.labels, str) and self.labels == "uniform":
            return self._pool
        if isinstance(self.labels, str):
            teff, feh = _b20_labels()
        else:
            tab = self.labels
            tcol = "teff" if "teff" in tab.colnames else "TEFF"
            fcol = "feh" if "feh" in tab.colnames else "FE_H"
            if tcol not in tab.colnames or fcol not in tab.colnames:
                raise ValueError("a label table needs columns teff and feh (or TEFF and FE_H)")
            teff = np.asarray(tab[tcol], float)
            feh = np.asarray(tab[fcol], float)
        keep = (
            np.isfinite(teff)
            & np.isfinite(feh)
            & (teff >= self.teff_range[0])
            & (teff <= self.teff_range[1])
            & (feh >= self.feh_range[0])
            & (feh <= self.feh_range[1])
        )
        if not keep.any():
            raise ValueError("no catalogue labels inside the mock's domain")
        self._pool = (teff[keep], feh[keep])
        return self._pool

    def _draw(
        self, rng: np.random.Generator, k: int, *, labels: bool, noise: bool
    ) -> dict[str, Any]:
        """All random numbers of ``k`` spectra from one generator, in a fixed order.

        Labels (if asked), SNR, rv, activity, log g scatter, calibration error,
        flux level, cosmic rays, dead pixels, and last (if asked) the noise
        deviates, shape (k, n_pix).
        """
        d: dict[str, Any] = {}
        if labels:
            pool = self.label_pool()
            if pool is None:
                d["teff"] = rng.uniform(*self.teff_range, size=k)
                d["feh"] = rng.uniform(*self.feh_range, size=k)
            else:
                j = rng.integers(pool[0].size, size=k)
                d["teff"] = pool[0][j] + self.label_jitter[0] * rng.standard_normal(k)
                d["feh"] = pool[1][j] + self.label_jitter[1] * rng.standard_normal(k)
            d["teff"] = np.clip(d["teff"], *self.teff_range)
            d["feh"] = np.clip(d["feh"], *self.feh_range)
        lo, hi = (
            np.log(self.snr_range[0] / self.snr_median),
            np.log(self.snr_range[1] / self.snr_median),
        )
        a, b = ndtr(lo / self.snr_sigma), ndtr(hi / self.snr_sigma)
        d["snr"] = self.snr_median * np.exp(self.snr_sigma * ndtri(a + rng.random(k) * (b - a)))
        d["rv"] = np.clip(
            self.rv_mean + self.rv_sigma * rng.standard_normal(k), -self.rv_max, self.rv_max
        )
        d["u_active"] = rng.random(k)
        d["z_ew"] = rng.standard_normal(k)
        d["z_logg"] = rng.standard_normal(k)
        d["calib"] = self.calib_sigma * rng.standard_normal((k, 2))
        d["level"] = np.exp(rng.uniform(np.log(self.flux_level[0]), np.log(self.flux_level[1]), k))
        n_pix = self.n_pix
        n_cr = rng.poisson(self.cosmic_rate, k)
        d["cr_row"] = np.repeat(np.arange(k), n_cr)
        d["cr_pos"] = rng.integers(n_pix, size=n_cr.sum())
        d["cr_amp"] = rng.uniform(5.0, 50.0, size=n_cr.sum())
        n_bad = rng.binomial(n_pix, self.bad_pixel_rate, k)
        d["bad_row"] = np.repeat(np.arange(k), n_bad)
        d["bad_pos"] = rng.integers(n_pix, size=n_bad.sum())
        if noise:
            d["z"] = rng.standard_normal((k, n_pix))
        return d

    def _activity(
        self, spt: np.ndarray, u: np.ndarray, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p = (
            active_fraction_west2011(spt)
            if self.active_fraction == "west2011"
            else np.full(spt.shape, float(self.active_fraction))
        )
        active = u < p
        return active, np.where(active, 10.0 ** (0.2 + 0.1 * spt + 0.25 * z), 0.0)

    def _block(self, block: int, noise: bool) -> dict[str, Any]:
        """Draws of survey block ``block`` (spectra ``block * _SURVEY_BLOCK`` ...), cached."""
        key = (block, noise)
        if self._block_cache is not None and self._block_cache[0] == key:
            return self._block_cache[1]
        d = self._draw(self._rng(0, block), _SURVEY_BLOCK, labels=True, noise=noise)
        self._block_cache = (key, d)
        return d

    def _survey_draws(self, idx: np.ndarray, noise: bool) -> dict[str, Any]:
        """Draws of survey spectra ``idx`` (increasing, contiguous), gathered from their blocks."""
        out: dict[str, list[np.ndarray]] = {}
        row0 = 0
        for block in range(idx[0] // _SURVEY_BLOCK, idx[-1] // _SURVEY_BLOCK + 1):
            d = self._block(block, noise)
            first = block * _SURVEY_BLOCK
            rows = idx[(idx >= first) & (idx < first + _SURVEY_BLOCK)] - first
            r0, r1 = rows[0], rows[-1] + 1
            for name, val in d.items():
                if name in ("cr_pos", "cr_amp", "bad_pos"):
                    continue
                if name in ("cr_row", "bad_row"):
                    ev = name[:-4]
                    sel = (val >= r0) & (val < r1)
                    out.setdefault(name, []).append(val[sel] - r0 + row0)
                    out.setdefault(ev + "_pos", []).append(d[ev + "_pos"][sel])
                    if ev == "cr":
                        out.setdefault("cr_amp", []).append(d["cr_amp"][sel])
                else:
                    out.setdefault(name, []).append(val[r0:r1])
            row0 += r1 - r0
        return {name: np.concatenate(parts) for name, parts in out.items()}

    # ------------------------------------------------------------------ #
    # public generation API
    # ------------------------------------------------------------------ #
    def spectrum(
        self,
        teff: ArrayLike,
        feh: ArrayLike,
        logg: ArrayLike | None = None,
        snr: ArrayLike | None = None,
        rv: ArrayLike = 0.0,
        *,
        active: ArrayLike = False,
        halpha_ew: ArrayLike | None = None,
        noise: bool = True,
    ) -> Spectra:
        """Mock spectra at given labels.

        Inputs broadcast against each other. Each call draws fresh nuisances
        (calibration error, flux level, noise, cosmics, dead pixels) from a
        generator keyed by ``(seed, call number)``: a new instance with the
        same seed repeats the same sequence of calls exactly.

        Parameters
        ----------
        teff : array_like
            Effective temperature, K (within the mock's Teff domain).
        feh : array_like
            [M/H], dex (within :data:`FEH_RANGE`).
        logg : array_like, optional
            Recorded as ``logg_true``; the flux does not depend on it. Default:
            :func:`logg_from_teff` (plus ``logg_scatter``).
        snr : array_like, optional
            Median per-pixel S/N in 6800-8300 A. Default: drawn from the
            survey's SNR distribution.
        rv : array_like
            Radial velocity, km/s (absolute value at most 500).
        active : array_like of bool
            Add H-alpha emission.
        halpha_ew : array_like, optional
            Emission equivalent width, Angstrom, for active stars. Default:
            drawn (see the module docstring).
        noise : bool
            False: the noiseless flux (no noise, cosmics or dead pixels);
            ``ivar`` is still that of the noise model.

        Returns
        -------
        Spectra
            ``m`` spectra on :attr:`wavelength` (``m`` = broadcast size), with
            the truth columns in ``meta``.
        """
        arrays = np.broadcast_arrays(
            np.asarray(teff, float),
            np.asarray(feh, float),
            np.asarray(rv, float),
            np.asarray(active, bool),
            np.asarray(np.nan if logg is None else logg, float),
            np.asarray(np.nan if snr is None else snr, float),
            np.asarray(np.nan if halpha_ew is None else halpha_ew, float),
        )
        t, f, v, act, lg, sn, ew = (np.atleast_1d(a).ravel().copy() for a in arrays)
        self._check_labels(t, f, v)
        if snr is not None and np.any(~(sn > 0)):
            raise ValueError("snr must be positive")
        call = self._n_calls
        self._n_calls += 1
        d = self._draw(self._rng(1, call), t.size, labels=False, noise=noise)
        spt = teff_to_spt(t)
        _, ew_drawn = self._activity(spt, np.zeros(t.size), d["z_ew"])
        d["snr"] = np.where(np.isnan(sn), d["snr"], sn)
        d["rv"] = v
        d["logg"] = np.where(np.isnan(lg), logg_from_teff(t) + self.logg_scatter * d["z_logg"], lg)
        d["active"] = act
        d["halpha_ew"] = np.where(act, np.where(np.isnan(ew), ew_drawn, np.maximum(ew, 0.0)), 0.0)
        d["teff"], d["feh"] = t, f
        ids = np.array([f"mock-{self.survey}-{self.seed}-call{call}-{j}" for j in range(t.size)])
        return self._render(ids, np.arange(t.size), d, noise)

    def draw_truth(self, n: int, start: int = 0) -> Table:
        """The truth of spectra ``start .. start + n - 1`` of :meth:`generate`, without flux.

        Cheap (no spectra are made); equal to the truth table :meth:`generate`
        returns for the same indices, except ``n_cosmic`` and ``n_bad``.

        Parameters
        ----------
        n : int
            Number of spectra.
        start : int
            Index of the first.

        Returns
        -------
        astropy.table.Table
            Columns ``id``, ``index`` and the truth columns.
        """
        idx = np.arange(start, start + n)
        if n == 0:
            return self._truth_table(
                np.array([], dtype=str),
                idx,
                self._finish(
                    {
                        k: np.array([])
                        for k in ("teff", "feh", "snr", "rv", "u_active", "z_ew", "z_logg")
                    }
                ),
            )
        d = self._finish(self._survey_draws(idx, noise=False))
        return self._truth_table(self._ids(idx), idx, d)

    def generate(self, n: int, start: int = 0, *, noise: bool = True) -> tuple[Spectra, Table]:
        """Spectra ``start .. start + n - 1`` of the mock survey.

        Parameters
        ----------
        n : int
            Number of spectra (memory: ~60 kB each; prefer :meth:`iter_chunks`
            above ~10^4).
        start : int
            Index of the first spectrum; ``generate(n, start=m)`` continues
            ``generate(m)`` without repeating it.
        noise : bool
            False: noiseless flux (see :meth:`spectrum`).

        Returns
        -------
        spectra : Spectra
            Flux in arbitrary units, ivar, mask (dead pixels), meta with the truth.
        truth : astropy.table.Table
            ``id``, ``index`` and the truth columns (units in the column metadata).
        """
        if n < 1 or start < 0:
            raise ValueError("n must be >= 1 and start >= 0")
        idx = np.arange(start, start + n)
        d = self._finish(self._survey_draws(idx, noise))
        spec = self._render(self._ids(idx), idx, d, noise)
        truth = spec.meta[["id", "index", *_TRUTH_COLUMNS]].copy()
        truth.meta = dict(spec.meta.meta)
        return spec, truth

    def iter_chunks(
        self, n: int, chunk_size: int = 10_000, start: int = 0, *, noise: bool = True
    ) -> Iterator[tuple[Spectra, Table]]:
        """Yield :meth:`generate`'s output in chunks, for surveys too large to hold.

        Chunk ``k`` holds spectra ``start + k chunk_size ...``; concatenated,
        the chunks equal ``generate(n, start)`` exactly. Chunk sizes that are
        multiples of 256 waste no random draws.

        Parameters
        ----------
        n : int
            Total number of spectra.
        chunk_size : int
            Spectra per chunk (the last may be shorter).
        start : int
            Index of the first spectrum.
        noise : bool
            False: noiseless flux.

        Yields
        ------
        (Spectra, astropy.table.Table)
            As :meth:`generate`, for one chunk.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        for i0 in range(start, start + n, chunk_size):
            yield self.generate(min(chunk_size, start + n - i0), start=i0, noise=noise)

    # ------------------------------------------------------------------ #
    def _ids(self, idx: np.ndarray) -> np.ndarray:
        return np.array([f"mock-{self.survey}-{self.seed}-{i}" for i in idx], dtype=str)

    def _finish(self, d: dict[str, Any]) -> dict[str, Any]:
        """Turn survey draws into labels: activity and log g follow from Teff."""
        spt = teff_to_spt(d["teff"])
        d["active"], d["halpha_ew"] = self._activity(spt, d["u_active"], d["z_ew"])
        d["logg"] = logg_from_teff(d["teff"]) + self.logg_scatter * d["z_logg"]
        return d

    def _truth_table(
        self,
        ids: np.ndarray,
        index: np.ndarray,
        d: dict[str, Any],
        n_cosmic: np.ndarray | None = None,
        n_bad: np.ndarray | None = None,
    ) -> Table:
        m = index.size
        tab = Table()
        tab["id"] = ids if m else np.array([], dtype="U1")
        tab["index"] = np.asarray(index, dtype=np.int64)
        values = {
            "teff_true": d["teff"],
            "feh_true": d["feh"],
            "logg_true": d["logg"],
            "spt_true": teff_to_spt(d["teff"]),
            "snr_true": d["snr"],
            "rv_true": d["rv"],
            "active": np.asarray(d["active"], bool),
            "halpha_ew_true": d["halpha_ew"],
            "n_cosmic": np.zeros(m, np.int64) if n_cosmic is None else n_cosmic,
            "n_bad": np.zeros(m, np.int64) if n_bad is None else n_bad,
        }
        for name, (unit, desc) in _TRUTH_COLUMNS.items():
            tab[name] = values[name]
            tab[name].unit = unit or None
            tab[name].description = desc
        tab.meta.update(
            {"MOCK": True, "SURVEY": self.survey, "SEED": self.seed, "DESCRIPTION": self.describe()}
        )
        return tab

    def _render(
        self, ids: np.ndarray, index: np.ndarray, d: dict[str, Any], noise: bool
    ) -> Spectra:
        """Flux, ivar and mask of the spectra described by the draws ``d`` (rows of ``index``)."""
        m, n_pix = index.size, self.n_pix
        flux = np.empty((m, n_pix))
        ivar = np.empty((m, n_pix))
        mask = np.zeros((m, n_pix), dtype=bool)
        spt = teff_to_spt(d["teff"])
        snr, level = d["snr"], d["level"]
        for b0 in range(0, m, _BLOCK):
            sl = slice(b0, min(b0 + _BLOCK, m))
            F = self._model_block(spt[sl], d["feh"][sl], d["rv"][sl], d["halpha_ew"][sl])
            F *= np.exp(d["calib"][sl] @ self._legendre)
            F *= (level[sl] / np.median(F[:, self._iband], axis=1))[:, None]
            Fp = np.maximum(F, 1e-4 * level[sl, None])
            if self.noise_model == "photon":
                sigma = np.sqrt(Fp * level[sl, None]) / snr[sl, None]
            else:
                sigma = Fp / snr[sl, None]
            ivar[sl] = 1.0 / sigma**2
            if noise:
                F += sigma * d["z"][sl]
            flux[sl] = F
            if noise:
                cr = (d["cr_row"] >= sl.start) & (d["cr_row"] < sl.stop)
                r, c = d["cr_row"][cr], d["cr_pos"][cr]
                flux[r, c] += d["cr_amp"][cr] * sigma[r - b0, c]
        n_cr = np.zeros(m, np.int64)
        n_bad = np.zeros(m, np.int64)
        if noise:
            flux[d["bad_row"], d["bad_pos"]] = 0.0
            ivar[d["bad_row"], d["bad_pos"]] = 0.0
            mask[d["bad_row"], d["bad_pos"]] = True
            n_cr = np.bincount(d["cr_row"], minlength=m)
            n_bad = mask.sum(axis=1)
        meta = self._truth_table(ids, index, d, n_cr, n_bad)
        meta["file"] = np.array([""] * m, dtype="U1")
        meta["snr"] = snr
        meta["flag"] = np.zeros(m, np.int64)
        meta["flag_reason"] = np.array([""] * m, dtype="U1")
        return Spectra(self.wavelength.copy(), flux, ivar, mask, meta)


def _shift_rows(f: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift each row of ``f`` by ``shift`` pixels (positive: to larger index), linear interpolation.

    ``out[k] = f(k - shift)``; positions beyond the ends take the end values.
    """
    out = f.copy()
    n = f.shape[1]
    g0 = np.empty(n, dtype=f.dtype)
    g1 = np.empty(n, dtype=f.dtype)
    for j, s in enumerate(shift):
        if s == 0:
            continue
        n0 = int(np.floor(s))
        phi = f.dtype.type(s - n0)
        _shifted(f[j], n0, g1)  # f[k - n0]
        _shifted(f[j], n0 + 1, g0)  # f[k - n0 - 1]
        np.multiply(g1, 1 - phi, out=out[j])
        out[j] += phi * g0
    return out


def _shifted(src: np.ndarray, d: int, out: np.ndarray) -> None:
    """``out[k] = src[clip(k - d, 0, n - 1)]`` for an integer ``d`` with ``|d| < n``."""
    n = src.size
    if d >= 0:
        out[d:] = src[: n - d]
        out[:d] = src[0]
    else:
        out[: n + d] = src[-d:]
        out[n + d :] = src[-1]
