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


SPECTRUM_FLAG_MEANING: dict[SpectrumFlag, str] = {
    SpectrumFlag.READ_ERROR: "the file could not be read, or is not a spectrum of the expected kind",
    SpectrumFlag.ALL_NAN: "every flux value is NaN or infinite",
    SpectrumFlag.NO_IVAR: "no pixel has a positive, finite inverse variance",
    SpectrumFlag.NOT_INCREASING: "the wavelength array is not strictly increasing (or not finite)",
    SpectrumFlag.NO_OVERLAP: "the spectrum does not overlap the target wavelength grid",
    SpectrumFlag.LOW_SNR: "SNR below the threshold asked for in preprocessing",
    SpectrumFlag.NORM_FAILED: "the pseudo-continuum fit failed (no usable pixels or a non-positive continuum)",
    SpectrumFlag.FEW_PIXELS: "too few good pixels left on the common grid after rebinning and masking",
}
"""One line per :class:`SpectrumFlag` bit: what it means."""


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


LABEL_FLAG_MEANING: dict[LabelFlag, str] = {
    LabelFlag.FAILED: "failed: no fit (bad input, too few pixels, numerical failure); labels are NaN",
    LabelFlag.NOT_CONVERGED: "Levenberg-Marquardt stopped at its iteration cap without meeting the tolerances",
    LabelFlag.LOW_SNR: "SNR below the model's low_snr threshold",
    LabelFlag.FEW_PIXELS: "fewer good pixels than min_good_fraction of the model's usable pixels",
    LabelFlag.OUTSIDE_DOMAIN: "label k outside the training domain: bit OUTSIDE_DOMAIN << k",
    LabelFlag.BAD_FIT: "reduced chi2 above the model's rchi2_threshold_ (learnt from the training spectra)",
    LabelFlag.FAR_FROM_TRAINING: ("best-fit labels farther from the training labels (k-th neighbour, "
                                  "standardised) than the model's knn_threshold_"),
    LabelFlag.NOT_NORMALISED: "median flux far from the training spectra's level: not normalised like them",
}
"""One line per :class:`LabelFlag` bit: what it means."""


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


#: When each bit is set, keyed ``"Class.NAME"`` (members of the two enums with equal values
#: compare equal, so they cannot share a dict as keys).
FLAG_WHEN: dict[str, str] = {
    "SpectrumFlag.READ_ERROR": "reading (mdslam.spectra readers, batch reads)",
    "SpectrumFlag.ALL_NAN": "reading",
    "SpectrumFlag.NO_IVAR": "reading",
    "SpectrumFlag.NOT_INCREASING": "reading",
    "SpectrumFlag.NO_OVERLAP": "preprocessing (rebinning onto the model grid)",
    "SpectrumFlag.LOW_SNR": "preprocessing, when min_snr is given",
    "SpectrumFlag.NORM_FAILED": "preprocessing (pseudo-continuum)",
    "SpectrumFlag.FEW_PIXELS": "preprocessing, below min_good_fraction",
    "LabelFlag.FAILED": "labelling: unreadable or unusable input, no good pixel, numerical failure",
    "LabelFlag.NOT_CONVERGED": "labelling: the optimiser hit its iteration cap",
    "LabelFlag.LOW_SNR": "labelling: snr below the model's low_snr",
    "LabelFlag.FEW_PIXELS": "labelling: good pixels below the model's min_good_fraction",
    "LabelFlag.OUTSIDE_DOMAIN": "labelling: the label lies outside the training labels' range",
    "LabelFlag.BAD_FIT": "labelling: rchi2 above the model's rchi2_threshold_ (mdslam.checks.rchi2_threshold)",
    "LabelFlag.FAR_FROM_TRAINING": "labelling: k-NN distance above the model's knn_threshold_ "
                                 "(mdslam.checks.knn_threshold)",
    "LabelFlag.NOT_NORMALISED": "labelling: median flux / training level outside mdslam.checks.FLUX_LEVEL_RANGE",
}

#: What a user should do about each bit, keyed ``"Class.NAME"``.
FLAG_ACTION: dict[str, str] = {
    "SpectrumFlag.READ_ERROR": "check the file and the format option; the reason column names the problem",
    "SpectrumFlag.ALL_NAN": "drop the spectrum",
    "SpectrumFlag.NO_IVAR": "give an inverse variance (or an error array) with the flux",
    "SpectrumFlag.NOT_INCREASING": "check the wavelength array or header (units, order)",
    "SpectrumFlag.NO_OVERLAP": "check the wavelength units/frame; use a model trained on this range",
    "SpectrumFlag.LOW_SNR": "use the spectrum only if a noisy label is acceptable",
    "SpectrumFlag.NORM_FAILED": "inspect the spectrum; too many masked pixels or negative flux",
    "SpectrumFlag.FEW_PIXELS": "inspect the mask; the spectrum covers too little of the grid",
    "LabelFlag.FAILED": "do not use the labels (they are NaN); read the error column",
    "LabelFlag.NOT_CONVERGED": "treat the labels as unreliable; check rchi2",
    "LabelFlag.LOW_SNR": "use the empirical (CV) uncertainty, not the formal one",
    "LabelFlag.FEW_PIXELS": "treat the labels as unreliable",
    "LabelFlag.OUTSIDE_DOMAIN": "leave the label out of comparisons: the model extrapolates there",
    "LabelFlag.BAD_FIT": "the model does not describe this spectrum (other star type, wrong grid or units, "
                       "out-of-domain labels): do not use the labels",
    "LabelFlag.FAR_FROM_TRAINING": "treat the labels as extrapolated: the true labels are likely outside the "
                                 "training set, and pulled inside it",
    "LabelFlag.NOT_NORMALISED": "normalise the spectrum like the training spectra (mdslam.preprocess) and relabel",
}


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
