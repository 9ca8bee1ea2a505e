"""Helpers every chapter calls: the ``data_mode`` guard, the seeded ``n_max`` draw,
provenance and results tables (Markdown for ``IPython.display``).

They live here so that no chapter carries its own copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["require_data_mode", "subsample", "provenance", "markdown_table", "comparison_table"]


def require_data_mode(data_mode: str) -> Any:
    """Check a chapter's ``data_mode`` parameter; return the archive module if asked for.

    Parameters
    ----------
    data_mode
        ``"offline"`` (registered datasets only) or ``"archive"``.

    Returns
    -------
    module or None
        :mod:`mdslam.compendium.inputs` (one function per chapter input, from
        the public archives) for ``"archive"``, None for ``"offline"``.

    Raises
    ------
    ValueError
        For any other value.
    """
    if data_mode == "offline":
        return None
    if data_mode != "archive":
        raise ValueError(f"data_mode must be 'offline' or 'archive', got {data_mode!r}")
    from . import inputs

    return inputs


def subsample(table: Any, n_max: int | None, seed: int | None = None) -> Any:
    """At most ``n_max`` rows of ``table``, drawn at random (seeded), in table order.

    Parameters
    ----------
    table
        Anything indexable by an integer array with ``len`` (astropy Table,
        numpy array).
    n_max
        Cap on the number of rows; ``None`` (or a cap >= len) returns ``table``
        itself.
    seed
        Seed of ``numpy.random.default_rng``: the same seed draws the same rows.
    """
    import numpy as np

    if n_max is None or len(table) <= int(n_max):
        return table
    if int(n_max) < 0:
        raise ValueError(f"n_max must be >= 0 or None, got {n_max}")
    rng = np.random.default_rng(seed)
    return table[np.sort(rng.choice(len(table), int(n_max), replace=False))]


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def provenance(names: Iterable[str]) -> Any:
    """A Markdown table (IPython ``Markdown``) of the registered datasets a chapter reads.

    Columns: dataset, what it is, citation, licence; straight from
    :mod:`mdslam.datasets`, so a chapter's "data used" cannot drift from the
    registry.
    """
    from IPython.display import Markdown

    from .. import datasets

    lines = ["| dataset | what | citation | licence |", "|---|---|---|---|"]
    for d in map(datasets.get, names):
        lines.append(f"| `{d.name}` | {_md_cell(d.description)} | {_md_cell(d.citation)} | "
                     f"{_md_cell(d.license)} |")
    return Markdown("\n".join(lines))


def markdown_table(table: Any, floatfmt: str = ".3f", caption: str | None = None) -> Any:
    """An astropy Table as a Markdown table (IPython ``Markdown``), floats formatted.

    Integers get thousands separators; ``caption`` (Markdown) goes above.
    """
    import numpy as np
    from IPython.display import Markdown

    def fmt(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return _md_cell(v)

    names = list(table.colnames)
    lines = [f"**{caption}**", ""] if caption else []
    lines += ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in table:
        lines.append("| " + " | ".join(fmt(row[n]) for n in names) + " |")
    return Markdown("\n".join(lines))


def comparison_table(rows: Iterable[Sequence[Any]]) -> Any:
    """The results table of a chapter: quantity, the paper's value, ours (with its track).

    Parameters
    ----------
    rows
        ``(quantity, paper, here)`` triples of text.
    """
    from IPython.display import Markdown

    lines = ["| quantity | paper | here |", "|---|---|---|"]
    lines += [f"| {_md_cell(a)} | {_md_cell(b)} | {_md_cell(c)} |" for a, b, c in rows]
    return Markdown("\n".join(lines))
