"""The core works with the core dependencies alone (``pip install mdslam``, no extras).

In a fresh interpreter an import hook refuses every extra (archive, scale, plots, bench, book)
that mdslam's own code imports; the core then builds spectra, trains, labels, saves and loads.
An import of an extra by mdslam anywhere on that path fails the test, naming the module.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

EXTRAS = ["matplotlib", "dask", "distributed", "pyarrow", "astroquery", "requests", "urllib3",
          "psutil", "IPython", "papermill", "jupytext", "jupyter_book", "myst_nb", "h5py",
          "pandas"]

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        # refuse an extra when mdslam's own code imports it (other packages may probe)

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in BLOCKED:
                return None
            f = sys._getframe(1)
            while f is not None and ("importlib" in f.f_code.co_filename
                                     or f.f_code.co_filename.startswith("<frozen")):
                f = f.f_back
            caller = f.f_globals.get("__name__", "") if f is not None else ""
            if caller.startswith("mdslam"):
                raise ImportError(f"extra {name} imported by the core ({caller})")
            return None

    sys.meta_path.insert(0, Block())
    """
)

CORE_RUN = textwrap.dedent(
    """
    import tempfile, os
    import numpy as np
    from mdslam import flags, preprocess, relations, selection, spectra, validation, datasets
    from mdslam.slam import SLAM

    rng = np.random.default_rng(1)
    wave = np.linspace(6200.0, 8800.0, 400)
    y = np.column_stack([rng.uniform(3200, 4000, 120), rng.uniform(-0.8, 0.3, 120)])
    t = (y[:, :1] - 3600) / 400
    m = y[:, 1:]
    flux = 1 - 0.3 * np.exp(-0.5 * ((wave - 7100) / 60) ** 2) * (1 + t) - 0.1 * m * np.sin(wave / 80)
    flux += rng.normal(0, 0.01, flux.shape)
    ivar = np.full(flux.shape, 1e4)
    sp = preprocess.normalize(wave, flux, ivar)[0]
    assert sp.shape == flux.shape and relations.__name__ and selection.__name__ and validation.__name__ and datasets.__name__
    model = SLAM(C=(1.0, 10.0), epsilon=(0.05,), gamma=(0.1, 1.0), cv=3, n_jobs=1)
    model.fit(flux[:100], y[:100], ivar[:100], wavelength=wave, label_names=["teff", "m_h"])
    lab = model.predict(flux[100:], ivar[100:])
    assert np.nanstd(lab[:, 0] - y[100:, 0]) < 150, np.nanstd(lab[:, 0] - y[100:, 0])
    path = os.path.join(tempfile.mkdtemp(), "m.npz")
    model.save(path)
    again = SLAM.load(path)
    assert np.allclose(again.predict(flux[100:], ivar[100:]), lab, equal_nan=True)
    tab = model.predict_table(flux[100:], ivar[100:])
    assert len(tab) == 20 and int(flags.LabelFlag.FAILED) == 1
    print("core ok")
    """
)


@pytest.mark.core
def test_core_runs_without_any_extra():
    script = SCRIPT + CORE_RUN
    proc = subprocess.run([sys.executable, "-c", script, ",".join(EXTRAS)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "core ok" in proc.stdout
