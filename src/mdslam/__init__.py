"""mdslam: M dwarf stellar parameters with SLAM, the Stellar LAbel Machine.

A thin, fast package behind a rerunnable research compendium that reproduces
Li et al. (2021, LAMOST M dwarfs) and Qiu et al. (2025, SDSS-V BOSS M dwarfs).

Layers (imports run one way, from the top of this list to the bottom, never back):

1. core: ``flags``, ``svr``, ``slam`` (the estimator), ``spectra`` (the
   ``Spectra`` container and readers), ``preprocess``, ``relations`` (the papers'
   formulas), ``validation``, ``selection``, ``crossmatch``, ``plots``, ...;
2. data and services: ``datasets`` (registry, cache, offline mirror),
   ``archive`` (the public archives), ``mock``, ``batch``, ``isochrones``;
3. the compendium: ``compendium.inputs`` (each chapter's inputs),
   ``compendium.tracks`` (the data tracks and their training sets),
   ``compendium.chapter`` (helpers the chapters call), ``compendium.build``
   (papermill + jupyter-book);
4. ``cli`` and the notebooks.

``mdslam.tracks``, ``mdslam.book`` and ``mdslam.archive.inputs`` are the old
names of ``mdslam.compendium.tracks``, ``mdslam.compendium.build`` and
``mdslam.compendium.inputs``; they keep working for one release.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

#: Old module name -> its new home (aliases kept for one release).
MOVED_MODULES = {
    "mdslam.tracks": "mdslam.compendium.tracks",
    "mdslam.book": "mdslam.compendium.build",
    "mdslam.archive.inputs": "mdslam.compendium.inputs",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import mdslam.tracks`` returns the module now at ``mdslam.compendium.tracks``."""

    def find_spec(self, name, path=None, target=None):
        if name in MOVED_MODULES:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())


def __getattr__(name: str):
    """``from mdslam import tracks`` (old name) resolves through :data:`MOVED_MODULES`."""
    if f"mdslam.{name}" in MOVED_MODULES:
        return importlib.import_module(f"mdslam.{name}")
    raise AttributeError(f"module 'mdslam' has no attribute {name!r}")
