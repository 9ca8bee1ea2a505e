"""Pixel blocks of SLAM.fit on a Dask cluster (mdslam.slam.distribute): same model, bit for bit."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_slam import make_spectra

from mdslam.slam import SLAM
from mdslam.slam.distribute import BlockRunner, pixel_blocks
from mdslam.svr import KernelEig, rbf_kernel, solve_svr_staged

distributed = pytest.importorskip("distributed")

GRID = {"C": (1.0, 10.0), "epsilon": (0.01, 0.05), "gamma": (0.1, 0.5)}
FITTED = ("dual_coef_", "intercept_", "cv_mse_grid_", "C_", "epsilon_", "gamma_", "cv_mse_", "cv_md_")


class CountingClient:
    """A client that counts what is scattered (a real client underneath)."""

    def __init__(self, client):
        self.client = client
        self.scattered = []

    def scatter(self, data, **kw):
        self.scattered.append(type(data).__name__ if not isinstance(data, list) else f"list{len(data)}")
        return self.client.scatter(data, **kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


@pytest.fixture(scope="module")
def problem():
    flux, ivar, lab, _ = make_spectra(160, n_pix=96, seed=1)
    ivar[::7, 5] = 0.0                    # masked training pixels: per-sample C on some pixels
    return flux, ivar, lab


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        yield client


def test_pixel_blocks_cover_every_pixel_once():
    for n_pix, nw in [(1, 1), (7, 4), (96, 2), (1596, 2), (1596, 16), (100, 64)]:
        e = pixel_blocks(n_pix, nw)
        assert e[0] == 0 and e[-1] == n_pix and np.all(np.diff(e) > 0)
        assert e.size - 1 >= min(nw, max(n_pix // 8, 1))    # at least one block per worker that has 8 px
    assert pixel_blocks(1596, 1).tolist() == [0, 1596]


def test_fit_on_dask_is_bit_identical_to_in_process(problem, cluster):
    """2 workers (the cluster's threads set 2 blocks' workers) = in-process n_jobs=2, every array bit for bit."""
    flux, ivar, lab = problem
    ref = SLAM(**GRID, cv=3, random_state=3, n_jobs=2).fit(flux, lab, ivar)
    spy = CountingClient(cluster)
    dist = SLAM(**GRID, cv=3, random_state=3).fit(flux, lab, ivar, client=spy)
    for name in FITTED:
        assert np.array_equal(getattr(dist, name), getattr(ref, name), equal_nan=True), name
    assert dist.solver_info_ == ref.solver_info_
    # the kernel of each (gamma, fold) and of each refit gamma is scattered once, not once per (C, epsilon)
    n_kernels = len(GRID["gamma"]) * 3 + np.unique(ref.gamma_).size
    assert spy.scattered.count("KernelEig") == n_kernels
    flux_new, ivar_new, _, _ = make_spectra(5, n_pix=96, seed=9)
    assert np.array_equal(dist.predict(flux_new, ivar_new), ref.predict(flux_new, ivar_new))


def test_block_layout_is_set_by_n_jobs_not_by_the_cluster(problem, cluster):
    """n_jobs=3 on a 2-worker cluster: the in-process fit with n_jobs=3, bit for bit."""
    flux, ivar, lab = problem
    X = (lab - lab.mean(0)) / lab.std(0)
    Y = ((flux - flux.mean(0)) / flux.std(0)).T
    ke = KernelEig.from_kernel(rbf_kernel(X, X, 0.5))
    C = np.where(ivar.T > 0, 10.0, 0.0)
    local = BlockRunner(3).solve(solve_svr_staged, ke, Y, C, 0.05, tol=1e-3)
    remote = BlockRunner(3, cluster).solve(solve_svr_staged, ke, Y, C, 0.05, tol=1e-3)
    assert pixel_blocks(Y.shape[0], 3).tolist() == [0, 32, 64, 96]   # min(2 x 3, max(96 // 64, 3)) = 3 blocks
    for a, b in zip((local.beta, local.intercept, local.gap, local.n_iter),
                    (remote.beta, remote.intercept, remote.gap, remote.n_iter), strict=True):
        assert np.array_equal(a, b)
    assert np.all(remote.gap <= 1e-3)     # libsvm's tolerance reached by every block


@pytest.mark.slow
def test_fit_on_worker_processes_is_bit_identical(problem):
    """Two worker processes (kernel pickled and shipped, BLAS limited per task): the same model."""
    flux, ivar, lab = problem
    ref = SLAM(**GRID, cv=3, random_state=3, n_jobs=2).fit(flux, lab, ivar)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c, distributed.Client(c) as client:
        dist = SLAM(**GRID, cv=3, random_state=3).fit(flux, lab, ivar, client=client)
    for name in FITTED:
        assert np.array_equal(getattr(dist, name), getattr(ref, name), equal_nan=True), name


class LosingClient(CountingClient):
    """The first gather fails as when a worker holding scattered data is lost."""

    def __init__(self, client):
        super().__init__(client)
        self.lost = False

    def gather(self, futures, **kw):
        if not self.lost:
            self.lost = True
            from concurrent.futures import CancelledError
            raise CancelledError("scattered data lost with a worker")
        return self.client.gather(futures, **kw)


def test_lost_worker_data_is_scattered_again(problem, cluster):
    """A cancelled gather: warning, kernel scattered again, blocks resubmitted, same solution."""
    flux, ivar, lab = problem
    X = (lab - lab.mean(0)) / lab.std(0)
    Y = ((flux - flux.mean(0)) / flux.std(0)).T
    ke = KernelEig.from_kernel(rbf_kernel(X, X, 0.3))
    local = BlockRunner(2).solve(solve_svr_staged, ke, Y, 1.0, 0.05, tol=1e-3)
    spy = LosingClient(cluster)
    with pytest.warns(RuntimeWarning, match="lost with a Dask worker"):
        remote = BlockRunner(2, spy).solve(solve_svr_staged, ke, Y, 1.0, 0.05, tol=1e-3)
    assert spy.scattered.count("KernelEig") == 2
    assert np.array_equal(local.beta, remote.beta) and np.array_equal(local.intercept, remote.intercept)


def test_nystrom_fit_on_dask_is_bit_identical(problem, cluster):
    """kernel_rank (Nystrom landmarks) with a client: the in-process model with the same n_jobs."""
    flux, ivar, lab = problem
    kw = dict(GRID, cv=3, random_state=3, kernel_rank=60)
    ref = SLAM(**kw, n_jobs=2).fit(flux, lab, ivar)
    dist = SLAM(**kw).fit(flux, lab, ivar, client=cluster)
    for name in FITTED:
        assert np.array_equal(getattr(dist, name), getattr(ref, name), equal_nan=True), name


def test_in_process_blocks_do_not_depend_on_the_callers_blas_threads(problem):
    """Blocks in threads: the same solution whether or not the caller already limited BLAS to one thread."""
    from threadpoolctl import threadpool_limits

    flux, ivar, lab = problem
    X = (lab - lab.mean(0)) / lab.std(0)
    Y = ((flux - flux.mean(0)) / flux.std(0)).T
    ke = KernelEig.from_kernel(rbf_kernel(X, X, 0.5))
    free = BlockRunner(3).solve(solve_svr_staged, ke, Y, 10.0, 0.05, tol=1e-3)
    with threadpool_limits(limits=1, user_api="blas"):
        limited = BlockRunner(3).solve(solve_svr_staged, ke, Y, 10.0, 0.05, tol=1e-3)
    assert np.array_equal(free.beta, limited.beta) and np.array_equal(free.n_iter, limited.n_iter)


def test_malloc_env_is_read_in_worker_processes_only(monkeypatch):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ in the starting process too, where it has no effect."""
    from mdslam.slam.distribute import MALLOC_ENV, _worker_malloc_env

    monkeypatch.setenv(MALLOC_ENV, "65536")
    assert _worker_malloc_env(os.getpid()) is None            # a worker thread of the caller's process
    assert _worker_malloc_env(os.getpid() + 1) == "65536"     # a worker process started with it


class MallocClient(CountingClient):
    """Workers that report Dask's MALLOC_TRIM_THRESHOLD_ (as nanny-started worker processes do)."""

    def run(self, fn, *args, **kw):
        return {"tcp://w1": "65536", "tcp://w2": None}


def test_workers_with_dask_malloc_setting_are_named_once(problem, cluster):
    """One warning naming the variable and the way out; the solution is unchanged."""
    flux, ivar, lab = problem
    X = (lab - lab.mean(0)) / lab.std(0)
    Y = ((flux - flux.mean(0)) / flux.std(0)).T
    ke = KernelEig.from_kernel(rbf_kernel(X, X, 0.5))
    runner = BlockRunner(2, MallocClient(cluster))
    with pytest.warns(RuntimeWarning, match="MALLOC_TRIM_THRESHOLD_=65536.*local_cluster") as rec:
        a = runner.solve(solve_svr_staged, ke, Y, 1.0, 0.05, tol=1e-3)
        runner.solve(solve_svr_staged, ke, Y, 10.0, 0.05, tol=1e-3)
    assert sum("MALLOC_TRIM" in str(w.message) for w in rec) == 1
    assert np.array_equal(a.beta, BlockRunner(2).solve(solve_svr_staged, ke, Y, 1.0, 0.05, tol=1e-3).beta)


class SubmitCountingClient(CountingClient):
    """Counts ``submit`` calls."""

    def __init__(self, client):
        super().__init__(client)
        self.submitted = 0

    def submit(self, *args, **kw):
        self.submitted += 1
        return self.client.submit(*args, **kw)


def test_submit_many_puts_every_problem_on_the_cluster_before_it_is_read(problem, cluster):
    """All (C, epsilon) blocks submitted at the call; the solutions, in order, equal the in-process ones."""
    flux, ivar, lab = problem
    X = (lab - lab.mean(0)) / lab.std(0)
    Y = ((flux - flux.mean(0)) / flux.std(0)).T
    ke = KernelEig.from_kernel(rbf_kernel(X, X, 0.3))
    problems = [(1.0, 0.05), (10.0, 0.05), (1.0, 0.01)]
    spy = SubmitCountingClient(cluster)
    sols = BlockRunner(2, spy).submit_many(solve_svr_staged, ke, Y, problems, tol=1e-3)
    n_blocks = pixel_blocks(Y.shape[0], 2).size - 1
    assert spy.submitted == len(problems) * n_blocks and spy.scattered.count("KernelEig") == 1
    for (C, eps), sol in zip(problems, sols, strict=True):
        ref = BlockRunner(2).solve(solve_svr_staged, ke, Y, C, eps, tol=1e-3)
        assert np.array_equal(sol.beta, ref.beta) and np.array_equal(sol.n_iter, ref.n_iter)
        assert sol.state == ()                               # the warm-start state is not sent back


def test_pruned_fit_on_dask_scatters_each_kernel_once(problem, cluster):
    """cv_prune on a cluster: the in-process model bit for bit, one scatter per kernel (not per grid point)."""
    flux, ivar, lab = problem
    kw = dict(GRID, cv=3, random_state=3, cv_prune=1.05)
    ref = SLAM(**kw, n_jobs=2).fit(flux, lab, ivar)
    spy = CountingClient(cluster)
    dist = SLAM(**kw).fit(flux, lab, ivar, client=spy)
    for name in FITTED:
        assert np.array_equal(getattr(dist, name), getattr(ref, name), equal_nan=True), name
    assert ref.solver_info_["cv_pruned_fraction"] > 0                  # the pruned path was taken
    assert spy.scattered.count("KernelEig") <= len(GRID["gamma"]) * 3 + np.unique(ref.gamma_).size


def test_dask_fit_benchmark_clock_and_options(problem, monkeypatch):
    """benchmarks/dask_fit.py: the block-phase clock wraps the fit and is removed after; bad --repeat is refused."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    dask_fit = pytest.importorskip("dask_fit")
    from mdslam.slam import estimator

    before = estimator._grid_search_cv, estimator._refit_all
    flux, ivar, lab = problem
    d = {"flux": flux[:, :24], "ivar": ivar[:, :24], "labels": lab, "wave": np.arange(24.0)}
    r = dask_fit.timed_fit(d, n_jobs=1)
    assert (estimator._grid_search_cv, estimator._refit_all) == before
    assert 0 < r["blocks"] <= r["wall"] and r["cpu_workers"] == 0.0    # in process: no worker processes
    ref = SLAM(**dask_fit.GRID, cv=5, random_state=0, n_jobs=1).fit(flux[:, :24], lab, ivar[:, :24])
    assert np.array_equal(r["model"].dual_coef_, ref.dual_coef_)      # the clock does not change the fit
    with pytest.raises(SystemExit):
        dask_fit.main(["--repeat", "0"])
    sys.modules.pop("dask_fit", None)


@pytest.fixture(scope="module")
def newton_model(problem):
    """A Nystrom model (primal Newton final fits) fitted with two threads."""
    flux, ivar, lab = problem
    return SLAM(**GRID, cv=3, random_state=3, kernel_rank=60, solver="newton", n_jobs=2).fit(flux, lab, ivar)


def _refit_inputs(model, problem):
    from mdslam.slam.training import _standardise

    flux, ivar, lab = problem
    good = (ivar > 0) & np.isfinite(flux)
    Xs, Ys, _ = _standardise(np.where(good, flux, 0.0), lab, good)
    return Xs, Ys, good


def test_final_fits_in_one_pool_equal_the_group_by_group_fits(newton_model, problem):
    """All gamma groups' blocks in one pool of 2 threads: each group's duals are those of that group
    solved alone with the same blocks (``BlockRunner.solve``), bit for bit; 1 thread (one block per group)
    agrees to rounding."""
    from mdslam.slam.primal import solve_svr_newton
    from mdslam.slam.training import _kernel, _refit_all

    m = newton_model
    Xs, Ys, good = _refit_inputs(m, problem)
    # three gamma groups of 60, 26 and 10 px (the last one block even with two workers)
    gam = np.repeat([0.1, 0.5, 1.0], [60, 26, 10])[np.random.default_rng(0).permutation(96)]
    args = (Xs, Ys, good, m.C_, m.epsilon_, gam, m.pixel_usable_, m.tol, m.refit_tol, False)
    dual, b, info = _refit_all(*args, 2, 60, "newton")
    for g in (0.1, 0.5, 1.0):
        pix = np.flatnonzero((gam == g) & m.pixel_usable_)
        ke = _kernel(Xs, g, 60)
        sol = BlockRunner(2).solve(solve_svr_newton, ke, np.ascontiguousarray(Ys[:, pix].T),
                                   m.C_[pix, None] * good[:, pix].T, m.epsilon_[pix], tol=m.tol)
        assert np.array_equal(dual[np.ix_(pix, ke.landmarks)], ke.expansion(sol.beta)[0])
        assert np.array_equal(b[pix], sol.intercept)
    dual1, b1, _ = _refit_all(*args, 1, 60, "newton")
    scale = np.abs(dual1).max()
    assert np.abs(dual - dual1).max() <= 1e-9 * scale and np.allclose(b, b1, rtol=0, atol=1e-9)


def test_training_set_labelling_on_threads_equals_one_thread(newton_model, problem):
    """The fit-quality reduced chi2 of the training spectra: 2 threads in batches of 16 = 1 thread in one batch."""
    from mdslam.slam import infer

    flux, ivar, _ = problem
    good = (ivar > 0) & np.isfinite(flux)
    m = newton_model
    m.set_params(n_jobs=1)
    one = infer.training_rchi2(m, np.where(good, flux, 0.0), good, ivar)
    m.set_params(n_jobs=2, batch_size=16)
    try:
        two = infer.training_rchi2(m, np.where(good, flux, 0.0), good, ivar)
    finally:
        m.set_params(n_jobs=2, batch_size=256)
    assert np.isfinite(one).all() and one.size == flux.shape[0]
    assert np.allclose(two, one, rtol=1e-12, atol=0), np.abs(two / one - 1).max()
