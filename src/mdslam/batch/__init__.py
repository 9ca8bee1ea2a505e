"""Label many spectra: streaming, resumable batch prediction on one machine or a Dask cluster.

:func:`predict_batch` cuts a *source* of spectra into chunks, labels each
chunk with :meth:`mdslam.slam.SLAM.predict_table` and writes it to a part
file as soon as it is done; at the end the parts are streamed, one at a
time, into one catalogue (FITS binary table or Parquet). Neither the spectra
nor the catalogue are ever held in memory whole: memory stays flat whatever
the number of spectra.

Modules
-------
* :mod:`~mdslam.batch.sources` - :class:`FileSource` (npz / FITS tables of
  normalised flux on the model grid, or LAMOST / BOSS spectrum files
  preprocessed onto it), :class:`MockSource` (a :class:`mdslam.mock.MockSurvey`
  generated chunk by chunk, truth columns kept), :class:`ArraySource`
  (arrays in memory), and the chunk tasks cut from them.
* :mod:`~mdslam.batch.engines` - ``"inprocess"`` (default: chunks one after
  the other, the model using ``threads`` threads), ``"joblib"``
  (``n_workers`` loky processes) and ``"dask"`` (the scheduler at
  ``scheduler="tcp://host:port"``, a ``Client``, or :func:`local_cluster`).
  Workers receive the *path* of the model file (readable there: a shared
  file system for a remote cluster) and load it once per process.
* :mod:`~mdslam.batch.manifest` - the work directory: part files that name
  their chunk and row count and carry FITS checksums, the manifest, the
  lock, and the checks before assembly.
* :mod:`~mdslam.batch.output` - the catalogue writers (checked before the
  run) and :func:`read_catalogue`.
* :mod:`~mdslam.batch.driver` - :func:`predict_batch`.

Resuming
--------
The parts go to a directory the run makes and marks (``<out>.parts/``, or
``<work_dir>/<out name>.parts/``) with a ``manifest.json`` whose key is the
SHA-256 of the model file, the input list (paths, sizes, modification
times; or the mock's parameters), the chunk size and the prediction
options. A part file appears (atomically, by rename) only when its chunk is
finished, so after an interruption ``resume=True`` labels only the chunks
without a verified part; finished chunks are never redone, a damaged part
or one made for other rows is. The parts, and the directory, are deleted
once the catalogue is written (``keep_parts=True`` keeps them); nothing else
is ever deleted. A lock file keeps two runs off the same directory.

Failures
--------
A spectrum that cannot be read or fitted gets a row with ``flag`` bit
``LabelFlag.FAILED`` and, when known, the reason in the ``error`` column. A
chunk whose labelling raises gets one such row per spectrum (part
``*.failed.fits``, tried again by ``resume=True``). A chunk lost to the
infrastructure (a worker killed, the pool or the cluster gone) is run again;
if it stays lost, no catalogue is written, the result lists it in
``lost_chunks`` and ``resume=True`` continues the run.

Example
-------
>>> from mdslam.batch import FileSource, predict_batch              # doctest: +SKIP
>>> res = predict_batch("model.npz", FileSource(["spectra/"]), "labels.parquet",
...                     chunk_size=2000, engine="dask", n_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

from .driver import BatchInterrupted, BatchOptions, BatchResult, file_sha256, predict_batch
from .engines import ENGINES, local_cluster
from .manifest import BatchError, BatchLocked
from .output import read_catalogue
from .sources import ArraySource, ChunkData, FileSource, MockSource, expand_inputs

__all__ = [
    "ENGINES",
    "ArraySource",
    "BatchError",
    "BatchInterrupted",
    "BatchLocked",
    "BatchOptions",
    "BatchResult",
    "ChunkData",
    "FileSource",
    "MockSource",
    "expand_inputs",
    "file_sha256",
    "local_cluster",
    "predict_batch",
    "read_catalogue",
]
