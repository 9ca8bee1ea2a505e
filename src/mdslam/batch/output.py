"""The catalogue: checked before a run starts, assembled from the part files one part at a time.

* FITS (``.fits``, ``.fit``, ``.fts``): one binary table streamed with
  astropy's :class:`~astropy.io.fits.StreamingHDU`; the header carries the
  units (``TUNITn``), the column descriptions (``TCOMMn``), the model file's
  SHA-256 (``MODELSHA``) and the mdslam version (``MDSLAMV``).
* Parquet (``.parquet``, ``.pq``): one row group per part (pyarrow), with
  astropy's ``table_meta_yaml`` metadata (units, descriptions).
  :func:`read_catalogue` reads it back into an astropy Table with pyarrow
  alone (astropy's own Parquet reader needs pandas).
* Any other format astropy's ``Table.write`` knows (ECSV, CSV...): assembled
  in memory.

Every catalogue is written to a temporary file and renamed over ``out``
(:func:`mdslam.batch.manifest.atomic_path`).
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from .manifest import BatchError, atomic_path, table_hdu

__all__ = ["check_output", "read_catalogue", "write_catalogue"]

FITS_EXT = (".fits", ".fit", ".fts")
PARQUET_EXT = (".parquet", ".pq")


def output_kind(out: Path) -> str:
    """``"fits"``, ``"parquet"`` or ``"other"`` (astropy's writer), from the file name."""
    name = out.name.lower()
    if name.endswith(PARQUET_EXT):
        return "parquet"
    if name.endswith(FITS_EXT):
        return "fits"
    return "other"


def check_output(out: str | os.PathLike, overwrite: bool = False) -> str:
    """Check, before any work, that the catalogue ``out`` can be written; return its kind.

    Raises
    ------
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    BatchError
        ``out`` is a directory, its directory is missing or not writable, or
        no writer knows its extension.
    """
    from astropy.io.registry import identify_format

    out = Path(out)
    if out.is_dir():
        raise BatchError(f"out {out} is a directory: give a catalogue file name (e.g. {out / 'labels.fits'})")
    kind = output_kind(out)
    if kind == "other" and not identify_format("write", Table, str(out), None, [], {}):
        raise BatchError(f"out {out}: unknown catalogue extension {out.suffix!r} (use .fits or .parquet, or "
                         "a format astropy writes: .ecsv, .csv, ...)")
    if kind == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise BatchError(f"out {out}: writing Parquet needs pyarrow (pip install 'mdslam[scale]'), "
                             "or write .fits") from None
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise BatchError(f"out {out}: {parent} {what}")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".mdslam-write-test-"):
            pass
    except OSError as exc:
        raise BatchError(f"out {out}: directory {parent} is not writable ({exc.strerror})") from None
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass overwrite=True (--overwrite) to replace it")
    return kind


# --------------------------------------------------------------------------- #
# reading the parts
# --------------------------------------------------------------------------- #
def _string_widths(parts: Sequence[Path]) -> dict[str, int]:
    """Largest width of every string column over the part files (from their headers only)."""
    widths: dict[str, int] = {}
    for p in parts:
        h = fits.getheader(p, 1)
        for k in range(1, int(h["TFIELDS"]) + 1):
            form = str(h[f"TFORM{k}"]).strip()
            if form.endswith("A"):
                name = h[f"TTYPE{k}"]
                widths[name] = max(widths.get(name, 1), int(form[:-1] or 1))
    return widths


def _read_fits(path: Path) -> Table:
    """A FITS table with str columns, NaN unmasked, and units FITS does not define (dex) restored."""
    import astropy.units as u

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        tab = Table.read(path, format="fits", character_as_bytes=False, mask_invalid=False)
    for col in tab.itercols():
        if isinstance(col.unit, u.UnrecognizedUnit):
            try:
                col.unit = u.Unit(str(col.unit))
            except ValueError:
                pass
    header = fits.getheader(path, 1)  # column descriptions: the writer's TCOMMn cards
    for k in range(1, int(header.get("TFIELDS", 0)) + 1):
        name, comment = header.get(f"TTYPE{k}"), header.get(f"TCOMM{k}")
        if comment and name in tab.colnames and not tab[name].description:
            tab[name].description = comment
    return tab


def _read_part(path: Path, widths: dict[str, int]) -> Table:
    """One part's rows: string columns as str widened to ``widths``; no units, descriptions or meta.

    Units and descriptions come once from the first part's header
    (:func:`_column_cards`), so no unit string is parsed per part.
    """
    with fits.open(path) as hdul:
        tab = Table(hdul[1].data, copy=True)
    tab.convert_bytestring_to_unicode()
    for name, w in widths.items():
        if name in tab.colnames:
            tab.replace_column(name, tab[name].astype(f"U{w}"), copy=False)
    tab.meta.clear()
    return tab


def _column_cards(parts: Sequence[Path]) -> dict[str, dict[str, str]]:
    """``TUNITn``/``TCOMMn`` of the first part, by column name: ``{"teff": {"TUNIT": "K"}, ...}``."""
    h = fits.getheader(parts[0], 1)
    return {h[f"TTYPE{k}"]: {key: h[f"{key}{k}"] for key in ("TUNIT", "TCOMM") if f"{key}{k}" in h}
            for k in range(1, int(h["TFIELDS"]) + 1)}


def _with_units(tab: Table, cards: dict[str, dict[str, str]]) -> Table:
    """``tab`` with the units and descriptions of ``cards`` (a unit astropy cannot parse kept by name)."""
    import astropy.units as u

    for name, c in cards.items():
        if "TUNIT" in c:
            tab[name].unit = u.Unit(c["TUNIT"], parse_strict="silent")
        if "TCOMM" in c:
            tab[name].description = c["TCOMM"]
    return tab


# --------------------------------------------------------------------------- #
# writers
# --------------------------------------------------------------------------- #
def _data_bytes(hdu: fits.BinTableHDU) -> np.ndarray:
    """The FITS-encoded data of a binary table HDU (big-endian, logicals as T/F), as uint8."""
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    raw = buf.getvalue()
    with fits.open(io.BytesIO(raw)) as hdul:
        start = hdul[1].fileinfo()["datLoc"]
    n = int(hdu.header["NAXIS1"]) * int(hdu.header["NAXIS2"])
    return np.frombuffer(raw, np.uint8, count=n, offset=start)


def _write_fits(parts: Sequence[Path], tmp: Path, meta: dict) -> int:
    widths = _string_widths(parts)
    n_total = sum(int(fits.getval(p, "NAXIS2", ext=1)) for p in parts)
    cards = _column_cards(parts)
    stream = None
    for p in parts:
        hdu = table_hdu(_read_part(p, widths))
        if stream is None:
            header = hdu.header.copy()
            header["NAXIS2"] = n_total
            for k in range(int(header["TFIELDS"]), 0, -1):
                for key, value in cards[header[f"TTYPE{k}"]].items():
                    header.insert(f"TFORM{k}", (f"{key}{k}", value), after=True)
            for key, value in meta.items():
                header[key] = value
            stream = fits.StreamingHDU(tmp, header)
        stream.write(_data_bytes(hdu))
    stream.close()
    return n_total


def _write_parquet(parts: Sequence[Path], tmp: Path, meta: dict) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.table import meta as table_meta

    widths = _string_widths(parts)
    cards = _column_cards(parts)
    writer = schema = None
    n_total = 0
    try:
        for p in parts:
            tab = _read_part(p, widths)
            if writer is None:
                first = _with_units(tab[:0].copy(), cards)
                first.meta.update(meta)
                md = {"table_meta_yaml": "\n".join(table_meta.get_yaml_from_table(first))}
                for name in tab.colnames:
                    if tab[name].dtype.kind == "U":
                        md[f"table::len::{name}"] = str(tab[name].dtype.itemsize // 4)
                schema = pa.schema([(n, pa.from_numpy_dtype(tab[n].dtype.type)) for n in tab.colnames],
                                   metadata={k.encode(): v.encode() for k, v in md.items()})
                writer = pq.ParquetWriter(tmp, schema, version="2.4")
            arrays = [pa.array(np.asarray(tab[n]).astype(tab[n].dtype.newbyteorder("<"), copy=False)
                               if tab[n].dtype.kind != "U" else np.asarray(tab[n]), type=schema.field(n).type)
                      for n in tab.colnames]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            n_total += len(tab)
    finally:
        if writer is not None:
            writer.close()
    return n_total


def _write_other(parts: Sequence[Path], tmp: Path, meta: dict, out: Path) -> int:
    from astropy.io.registry import identify_format

    widths = _string_widths(parts)
    tab = _with_units(vstack([_read_part(p, widths) for p in parts], metadata_conflicts="silent"),
                      _column_cards(parts))
    tab.meta.update(meta)
    fmt = identify_format("write", Table, str(out), None, [], {})
    tab.write(tmp, format=fmt[0] if fmt else None, overwrite=True)
    return len(tab)


def write_catalogue(parts: Sequence[Path], out: Path, meta: dict) -> int:
    """Concatenate the part files, in order, into the catalogue ``out``; return its row count.

    Parameters
    ----------
    parts : sequence of Path
        Part files (FITS binary tables with the same columns).
    out : Path
        Catalogue; its extension picks the writer (module docstring).
    meta : dict
        Header keywords / table metadata (``MODELSHA``, ``LABELS``...).
    """
    if not parts:
        raise BatchError("no part files to assemble")
    kind = output_kind(out)
    with atomic_path(out) as tmp:
        if kind == "fits":
            return _write_fits(parts, tmp, meta)
        if kind == "parquet":
            return _write_parquet(parts, tmp, meta)
        return _write_other(parts, tmp, meta, out)


def read_catalogue(path: str | os.PathLike) -> Table:
    """A catalogue written by :func:`mdslam.batch.predict_batch`, as an astropy Table with units.

    FITS and other formats go through ``Table.read``; Parquet is read with
    ``pyarrow.parquet`` (astropy's Parquet reader needs pandas, which mdslam
    does not depend on) and gets its units, descriptions and metadata back
    from the ``table_meta_yaml`` that the writer stores.

    Parameters
    ----------
    path : path
        ``.fits``, ``.parquet`` or any format astropy reads.

    Returns
    -------
    Table
        String columns as ``str``; FITS NaN not masked.
    """
    path = Path(path)
    kind = output_kind(path)
    if kind == "fits":
        return _read_fits(path)
    if kind == "other":
        return Table.read(path)
    import pyarrow.parquet as pq
    from astropy.table import meta as table_meta

    pt = pq.ParquetFile(path).read()
    tab = Table({name: pt.column(name).to_numpy(zero_copy_only=False) for name in pt.column_names})
    for name in tab.colnames:
        if tab[name].dtype == object:
            tab[name] = tab[name].astype(str)
    md = {k.decode(): v.decode() for k, v in (pt.schema.metadata or {}).items()}
    if "table_meta_yaml" in md:
        header = table_meta.get_header_from_yaml(md["table_meta_yaml"].splitlines())
        for col in header.get("datatype", []):
            if col["name"] in tab.colnames:
                tab[col["name"]].unit = col.get("unit")
                tab[col["name"]].description = col.get("description")
        tab.meta.update(header.get("meta", {}))
    return tab
