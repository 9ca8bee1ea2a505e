"""The two flag vocabularies of mdslam, each defined once as an :class:`enum.IntFlag`.

* :class:`SpectrumFlag`: bits of a spectrum's ``meta['flag']``, set while reading and
  preprocessing (:mod:`mdslam.spectra`, :mod:`mdslam.preprocess`).
* :class:`LabelFlag`: bits of the ``flag`` column of a label table
  (:meth:`mdslam.slam.SLAM.predict_table`, ``mdslam predict``). The bit
  ``LabelFlag.OUTSIDE_DOMAIN`` is the first of one bit per label: label number
  ``k`` outside the model's domain sets ``LabelFlag.OUTSIDE_DOMAIN << k``
  (bits 4..11, so at most 8 labels). Fixed bits added later sit above that
  range: ``BAD_FIT`` (1 << 12), ``FAR_FROM_TRAINING`` (1 << 13) and
  ``NOT_NORMALISED`` (1 << 14), set by :func:`mdslam.checks.fit_flags`.

A value 0 means "no problem found". Flag values are stored as plain integers in
tables and files; ``SpectrumFlag(v)`` / ``LabelFlag(v)`` decode them, and
:func:`spectrum_flag_names` / :func:`label_flag_meanings` give readable text.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

__all__ = ["SpectrumFlag", "LabelFlag", "SPECTRUM_FLAG_MEANING", "LABEL_FLAG_MEANING",
           "FLAG_WHEN", "FLAG_ACTION", "spectrum_flag_names", "label_flag_meanings",
           "flag_table", "flag_markdown"]


class SpectrumFlag(enum.IntFlag):
    """Problems found while reading or preprocessing a spectrum (``meta['flag']``)."""

    READ_ERROR = 1 << 0
    ALL_NAN = 1 << 1
    NO_IVAR = 1 << 2
    NOT_INCREASING = 1 << 3
    NO_OVERLAP = 1 << 4
    LOW_SNR = 1 << 5
    NORM_FAILED = 1 << 6
    FEW_PIXELS = 1 << 7


class LabelFlag(enum.IntFlag):
    """Problems found while labelling a spectrum (the ``flag`` column of a label table)."""

    FAILED = 1
    NOT_CONVERGED = 2
    LOW_SNR = 4
    FEW_PIXELS = 8
    OUTSIDE_DOMAIN = 16
    # bits 16 << k (k < 8 labels) are the per-label OUTSIDE_DOMAIN bits; fixed bits go above them
    BAD_FIT = 1 << 12
    FAR_FROM_TRAINING = 1 << 13
    NOT_NORMALISED = 1 << 14


#: Every bit once: (flag, what it means, when it is set, what a user should do about it).
_FLAG_DOCS: tuple[tuple[enum.IntFlag, str, str, str], ...] = (
    (SpectrumFlag.READ_ERROR,
     "the file could not be read, or is not a spectrum of the expected kind",
     "reading (mdslam.spectra readers, batch reads)",
     "check the file and the format option; the reason column names the problem"),
    (SpectrumFlag.ALL_NAN,
     "every flux value is NaN or infinite",
     "reading",
     "drop the spectrum"),
    (SpectrumFlag.NO_IVAR,
     "no pixel has a positive, finite inverse variance",
     "reading",
     "give an inverse variance (or an error array) with the flux"),
    (SpectrumFlag.NOT_INCREASING,
     "the wavelength array is not strictly increasing (or not finite)",
     "reading",
     "check the wavelength array or header (units, order)"),
    (SpectrumFlag.NO_OVERLAP,
     "the spectrum does not overlap the target wavelength grid",
     "preprocessing (rebinning onto the model grid)",
     "check the wavelength units/frame; use a model trained on this range"),
    (SpectrumFlag.LOW_SNR,
     "SNR below the threshold asked for in preprocessing",
     "preprocessing, when min_snr is given",
     "use the spectrum only if a noisy label is acceptable"),
    (SpectrumFlag.NORM_FAILED,
     "the pseudo-continuum fit failed (no usable pixels or a non-positive continuum)",
     "preprocessing (pseudo-continuum)",
     "inspect the spectrum; too many masked pixels or negative flux"),
    (SpectrumFlag.FEW_PIXELS,
     "too few good pixels left on the common grid after rebinning and masking",
     "preprocessing, below min_good_fraction",
     "inspect the mask; the spectrum covers too little of the grid"),
    (LabelFlag.FAILED,
     "failed: no fit (bad input, too few pixels, numerical failure); labels are NaN",
     "labelling: unreadable or unusable input, no good pixel, numerical failure",
     "do not use the labels (they are NaN); read the error column"),
    (LabelFlag.NOT_CONVERGED,
     "Levenberg-Marquardt stopped at its iteration cap without meeting the tolerances",
     "labelling: the optimiser hit its iteration cap",
     "treat the labels as unreliable; check rchi2"),
    (LabelFlag.LOW_SNR,
     "SNR below the model's low_snr threshold",
     "labelling: snr below the model's low_snr",
     "use the empirical (CV) uncertainty, not the formal one"),
    (LabelFlag.FEW_PIXELS,
     "fewer good pixels than min_good_fraction of the model's usable pixels",
     "labelling: good pixels below the model's min_good_fraction",
     "treat the labels as unreliable"),
    (LabelFlag.OUTSIDE_DOMAIN,
     "label k outside the training domain: bit OUTSIDE_DOMAIN << k",
     "labelling: the label lies outside the training labels' range",
     "leave the label out of comparisons: the model extrapolates there"),
    (LabelFlag.BAD_FIT,
     "reduced chi2 above the model's rchi2_threshold_ (learnt from the training spectra)",
     "labelling: rchi2 above the model's rchi2_threshold_ (mdslam.checks.rchi2_threshold)",
     "the model does not describe this spectrum (other star type, wrong grid or units, out-of-domain labels): do not use the labels"),
    (LabelFlag.FAR_FROM_TRAINING,
     "best-fit labels farther from the training labels (k-th neighbour, standardised) than the model's knn_threshold_",
     "labelling: k-NN distance above the model's knn_threshold_ (mdslam.checks.knn_threshold)",
     "treat the labels as extrapolated: the true labels are likely outside the training set, and pulled inside it"),
    (LabelFlag.NOT_NORMALISED,
     "median flux far from the training spectra's level: not normalised like them",
     "labelling: median flux / training level outside mdslam.checks.FLUX_LEVEL_RANGE",
     "normalise the spectrum like the training spectra (mdslam.preprocess) and relabel"),
)


def _key(flag: enum.IntFlag) -> str:
    """``"Class.NAME"`` of a flag member (members of the two enums with equal values compare equal)."""
    return f"{type(flag).__name__}.{flag.name}"


SPECTRUM_FLAG_MEANING: dict[SpectrumFlag, str] = {f: m for f, m, _, _ in _FLAG_DOCS if isinstance(f, SpectrumFlag)}
"""One line per :class:`SpectrumFlag` bit: what it means."""

LABEL_FLAG_MEANING: dict[LabelFlag, str] = {f: m for f, m, _, _ in _FLAG_DOCS if isinstance(f, LabelFlag)}
"""One line per :class:`LabelFlag` bit: what it means."""

#: When each bit is set, keyed ``"Class.NAME"``.
FLAG_WHEN: dict[str, str] = {_key(f): w for f, _, w, _ in _FLAG_DOCS}

#: What a user should do about each bit, keyed ``"Class.NAME"``.
FLAG_ACTION: dict[str, str] = {_key(f): a for f, _, _, a in _FLAG_DOCS}


def spectrum_flag_names(flag: int) -> list[str]:
    """Names of the :class:`SpectrumFlag` bits set in ``flag`` (``[]`` when 0)."""
    return [f.name for f in SpectrumFlag if int(flag) & f]


def label_flag_meanings(flag: int, label_names: Sequence[str] = ()) -> list[str]:
    """Readable meanings of the :class:`LabelFlag` bits set in ``flag``.

    Parameters
    ----------
    flag : int
        A value of the ``flag`` column of a label table.
    label_names : sequence of str
        The model's label names, to name the per-label "outside domain" bits.
    """
    flag = int(flag)
    out = [LABEL_FLAG_MEANING[f] for f in LabelFlag
           if f != LabelFlag.OUTSIDE_DOMAIN and flag & f]
    for k, name in enumerate(label_names):
        if flag & (int(LabelFlag.OUTSIDE_DOMAIN) << k):
            out.append(f"{name} outside the domain")
    return out


def flag_table():
    """Every flag bit with its name, meaning, when it is set and what to do, as an astropy Table.

    Columns: ``column`` (``meta['flag']`` of spectra, or ``flag`` of label tables), ``bit``
    (int), ``name``, ``meaning``, ``when``, ``action``.
    """
    from astropy.table import Table

    rows = []
    for column, enum_cls, meanings in (("flag (label tables)", LabelFlag, LABEL_FLAG_MEANING),
                                       ("meta['flag'] (spectra)", SpectrumFlag,
                                        SPECTRUM_FLAG_MEANING)):
        for f in enum_cls:
            bit = f"{int(f)} << k" if f is LabelFlag.OUTSIDE_DOMAIN else str(int(f))
            rows.append((column, bit, f"{enum_cls.__name__}.{f.name}", meanings[f],
                         FLAG_WHEN[f"{enum_cls.__name__}.{f.name}"],
                         FLAG_ACTION[f"{enum_cls.__name__}.{f.name}"]))
    return Table(rows=rows, names=("column", "bit", "name", "meaning", "when", "action"))


def flag_markdown() -> str:
    """:func:`flag_table` as a Markdown table (the book's flag reference is generated from it)."""
    tab = flag_table()
    lines = ["| column | bit | name | meaning | when set | what to do |", "|---|---|---|---|---|---|"]
    for r in tab:
        cells = [str(r[c]).replace("|", "/") for c in tab.colnames]
        cells[2] = f"`{cells[2]}`"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
