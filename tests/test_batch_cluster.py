"""The LocalCluster that batch labelling makes: worker environment and Dask options."""

from __future__ import annotations

import os

import pytest

from mdslam import batch


@pytest.mark.slow                      # starts a Dask LocalCluster of 2 processes
def test_local_cluster_workers_run_without_profiler_and_malloc_trim():
    """The workers get QUIET_DASK (no statistical profiler, a 1-s event-loop check) and no
    MALLOC_TRIM_THRESHOLD_; the scheduler's event-loop check runs every second, not every 20 ms."""
    distributed = pytest.importorskip("dask.distributed")
    import dask

    def worker_state():
        return (dask.config.get("distributed.worker.profile.enabled"),
                dask.config.get("distributed.admin.tick.interval"),
                "MALLOC_TRIM_THRESHOLD_" in os.environ)

    with batch.local_cluster(2, host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        states = client.run(worker_state)
        tick = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval)
    assert len(states) == 2
    assert all(s == (False, "1s", False) for s in states.values()), states
    assert tick == pytest.approx(1.0)
    assert dask.config.get("distributed.admin.tick.interval") != "1s"      # the caller's options untouched
