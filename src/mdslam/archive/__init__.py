"""Archive mode: the papers' real data at full scale, from the public archives.

``mdslam.archive`` fetches what the offline mirror cannot hold: Gaia DR2/DR3
astrometry, photometry, quality columns, cones and XP spectra (ADQL and
DataLink through ``astroquery.gaia``), the published tables on VizieR
(``astroquery.vizier``, every row), SDSS summary files and BOSS spectra from
the Science Archive Server, LAMOST spectra and catalogues, and the published
Li et al. (2021) catalogue.

Everything goes through the dataset registry's one cache
(:func:`mdslam.datasets.cache_dir`, ``MDSLAM_CACHE``): a result is stored
under ``archive/<service>/...`` beside a JSON record of the query or URL that
made it, so a rerun sends no request. The offline mirror
(``MDSLAM_DATA_MIRROR``) is searched first, under ``archive/`` with the same
relative paths, and ``MDSLAM_ARCHIVE_OFFLINE=1`` forbids the network.

Network faults are handled in one place (:mod:`mdslam.archive._core`):
timeouts, a few retries with exponential backoff, resumable downloads that
never leave a truncated file in the cache, the archive's own error message
together with the query that caused it (:class:`ArchiveError`), and offline a
message naming what was needed and where to put it
(:class:`ArchiveUnavailableError`). Lists of ids are fetched in cached chunks
with a progress bar, so an interrupted run resumes.

Every service address is configurable (``MDSLAM_GAIA_TAP_URL``,
``MDSLAM_GAIA_DATA_URL``, ``MDSLAM_VIZIER_URL``, ``MDSLAM_SAS_URL``,
``MDSLAM_LAMOST_URL``, ``MDSLAM_PAPERDATA_URL``, ``MDSLAM_ZENODO_URL``; see
:data:`ENV`): the tests point them at replay servers on 127.0.0.1.

:mod:`mdslam.compendium.inputs` builds each chapter's inputs from these services
(one function per input, returning the types of the offline path): that is what
the chapters call with ``data_mode="archive"``. The names it had here
(``mdslam.archive.xp_training_set``, ...) keep working for one release.
"""

from . import files, gaia, vizier
from ._core import DEFAULT_URLS, ENV, ArchiveError, ArchiveUnavailableError, cache_root, service_url
from .files import *  # noqa: F403 - SDSS, LAMOST and paper data: files.__all__
from .gaia import *  # noqa: F403 - Gaia: gaia.__all__
from .vizier import *  # noqa: F403 - VizieR: vizier.__all__

__all__ = ["ArchiveError", "ArchiveUnavailableError", "ENV", "DEFAULT_URLS", "service_url", "cache_root",
           *gaia.__all__, *vizier.__all__, *files.__all__]


#: Chapter-input functions that moved to :mod:`mdslam.compendium.inputs` (old names kept
#: for one release; resolved lazily so that this package never imports the compendium).
_MOVED_TO_COMPENDIUM = frozenset({
    "ELBADRY2021_ZENODO",
    "apogee_net_dr19",
    "aspcap_calibration_sample",
    "aspcap_dr16",
    "aspcap_dr17",
    "aspcap_dr19",
    "astra_slam_catalogue",
    "b20_table",
    "boss_mdwarf_candidates",
    "boss_training_set",
    "elbadry2021_binaries",
    "gaia_xp_for",
    "hyades_candidates",
    "lamost_mdwarf_candidates",
    "lamost_training_set",
    "mann2015_table",
    "occam_members",
    "pick_column",
    "xp_training_set",
})


def __getattr__(name: str):
    if name in _MOVED_TO_COMPENDIUM:
        import importlib

        return getattr(importlib.import_module("mdslam.compendium.inputs"), name)
    raise AttributeError(f"module 'mdslam.archive' has no attribute {name!r}")
