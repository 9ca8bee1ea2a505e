"""Helpers every chapter calls: the ``data_mode`` guard, the seeded ``n_max`` draw,
provenance and results tables (Markdown for ``IPython.display``).

They live here so that no chapter carries its own copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["require_data_mode", "training_set", "INPUTS", "load", "subsample", "provenance", "markdown_table",
           "comparison_table", "archive_only"]


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


def training_set(track: str = "xp", data_mode: str = "offline", n_max: int | None = None, seed: int = 42,
                 snr_min: float = 30.0, **kwargs) -> Any:
    """The training set of a track, offline or from the archives: the one call of the chapters.

    Parameters
    ----------
    track : str
        ``"xp"`` (Gaia XP x APOGEE DR17, Li 2021's window, :func:`mdslam.compendium.tracks.xp_mdwarfs`),
        ``"xp_teff_logg"`` (the two-label set of :func:`mdslam.compendium.tracks.xp_teff_logg`),
        ``"lamost"`` (offline: the 54 DR7 spectra, :func:`mdslam.compendium.tracks.lamost_dr7`; archive:
        L21's LAMOST DR6 x APOGEE DR16), ``"xp_all"`` (every XP M dwarf, the
        stars chapters 4-8 label: :func:`mdslam.compendium.tracks.xp_all_mdwarfs`;
        archive: no SNR, [Fe/H] or label cut) or ``"boss"`` (archive only: Q25's
        BOSS DR19 FGK+M pairs).
    data_mode : str
        ``"offline"`` (registry and mirror) or ``"archive"``
        (:mod:`mdslam.compendium.inputs`, full scale).
    n_max, seed : int, optional
        At most ``n_max`` stars, drawn with :func:`mdslam.sampling.draw`.
    snr_min : float
        Minimum XP SNR of the XP tracks (the LAMOST and BOSS sets have their own cuts).
    **kwargs
        Passed to the track's function (e.g. ``teff_max``).

    Returns
    -------
    mdslam.compendium.tracks.TrainingSet

    Raises
    ------
    ValueError
        An unknown ``data_mode`` or a track not available in that mode.
    """
    from ..sampling import draw
    from . import tracks

    if data_mode not in ("offline", "archive"):
        raise ValueError(f"data_mode must be 'offline' or 'archive', got {data_mode!r}")
    if data_mode == "archive":
        from . import inputs as archive

        if track == "xp":
            kwargs.pop("teff_min", None)  # the archive set's lower Teff bound is the label cut (2800 K)
            return archive.xp_training_set(**{"teff_max": tracks.LI2021_TEFF[1], **kwargs}, snr_min=snr_min,
                                           n_max=n_max, seed=seed)
        if track == "xp_all":
            return archive.xp_training_set(label_cuts=False, require_feh=False, snr_min=0, n_max=n_max, seed=seed,
                                           **kwargs)
        if track == "lamost":
            return archive.lamost_training_set(n_max=n_max, seed=seed, **kwargs)
        if track == "boss":
            return archive.boss_training_set(n_max=n_max, seed=seed, **kwargs)
        raise ValueError(f"track must be 'xp', 'xp_all', 'lamost' or 'boss' in archive mode, got {track!r}")
    if track == "xp":
        return tracks.xp_mdwarfs(snr_min=snr_min, n_max=n_max, seed=seed, **kwargs)
    if track == "xp_teff_logg":
        return tracks.xp_teff_logg(snr_min=snr_min, n_max=n_max, seed=seed, **kwargs)
    if track in ("lamost", "xp_all"):
        ts = tracks.lamost_dr7(**kwargs) if track == "lamost" else tracks.xp_all_mdwarfs(**kwargs)
        return ts if n_max is None else ts.subset(draw(len(ts), n_max, seed))
    if track == "boss":
        raise ValueError("track 'boss' (Q25's BOSS DR19 FGK+M pairs) needs data_mode='archive'")
    raise ValueError(f"track must be 'xp', 'xp_teff_logg', 'xp_all' or 'lamost' offline, got {track!r}")


#: Chapter inputs with an archive counterpart: name -> (registry dataset read offline,
#: :mod:`mdslam.compendium.inputs` function read in archive mode, its keyword arguments).
INPUTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "b20": ("birky2020_table6_full", "b20_table", {}),
    "b20_binaries": ("birky2020_table3_binaries", "b20_table", {"table": "table3"}),
    "b20_mann": ("birky2020_table4_mann_labels", "b20_table", {"table": "table4"}),
    "hyades_cone": ("hyades_gaiadr2_cone_full", "hyades_candidates", {"vizier_names": True}),
    "occam_dr16": ("occam_member_dr16", "occam_members", {"release": "dr16"}),
    "occam_dr17": ("occam_member_dr17", "occam_members", {"release": "dr17"}),
    "aspcap_calibration": ("birky2020_table6_full", "aspcap_calibration_sample", {}),
}


def load(name: str, data_mode: str = "offline", n_max: int | None = None, seed: int = 42) -> Any:
    """A chapter input, offline or from the archives: the one call that replaces ``if archive`` blocks.

    Parameters
    ----------
    name : str
        A key of :data:`INPUTS` (offline: its registry dataset; archive: its
        :mod:`mdslam.compendium.inputs` function), or any registry dataset name
        (read from the registry in both modes).
    data_mode : str
        ``"offline"`` or ``"archive"``.
    n_max, seed : int, optional
        At most ``n_max`` rows, drawn with :func:`subsample` (the archive inputs
        that draw before downloading draw with the same ``n_max`` and ``seed``).

    Returns
    -------
    astropy.table.Table
        As the offline dataset or the archive function returns it.

    Raises
    ------
    ValueError
        An unknown ``data_mode``.
    """
    from .. import datasets

    require_data_mode(data_mode)
    if name not in INPUTS:
        return subsample(datasets.load(name), n_max, seed)
    offline, function, kwargs = INPUTS[name]
    if data_mode == "offline":
        return subsample(datasets.load(offline), n_max, seed)
    from . import inputs

    return subsample(inputs.fetch(function, n_max=n_max, seed=seed, **kwargs), n_max, seed)


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
        Seed of :func:`mdslam.sampling.draw`: the same seed draws the same rows.
    """
    from ..sampling import draw

    if n_max is None or len(table) <= int(n_max):
        return table
    return table[draw(len(table), n_max, seed)]


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
    """The results table of a chapter: quantity, the paper's value, ours (with its track)[, a note].

    Parameters
    ----------
    rows
        ``(quantity, paper, here)`` triples of text, or ``(quantity, paper, here, note)``
        quadruples: if any row has a note the table has the columns ``quantity | paper
        (reference) | ours (track, n, cut) | note`` (a triple gets an empty note).

    Returns
    -------
    IPython.display.Markdown
    """
    from IPython.display import Markdown

    rows = [tuple(r) for r in rows]
    if any(len(r) == 4 for r in rows):
        lines = ["| quantity | paper (reference) | ours (track, n, cut) | note |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in (*r, "")[:4]) + " |" for r in rows]
    else:
        lines = ["| quantity | paper | here |", "|---|---|---|"]
        lines += [f"| {_md_cell(a)} | {_md_cell(b)} | {_md_cell(c)} |" for a, b, c in rows]
    return Markdown("\n".join(lines))


def archive_only(chapter: str, **params: str) -> str:
    """What a chapter shows for a result that only archive mode can compute.

    Parameters
    ----------
    chapter : str
        The chapter's two-digit number (``"04"``).
    **params : str
        Further papermill parameters the result needs (``track="boss"``).

    Returns
    -------
    str
        ``"archive-only: run `mdslam book --only NN -p data_mode archive`"``, with
        ``-p NAME VALUE`` for each of ``params``.
    """
    extra = "".join(f" -p {k} {v}" for k, v in params.items())
    return f"archive-only: run `mdslam book --only {chapter} -p data_mode archive{extra}`"
