"""Where the pixel blocks of a batched SVR solve run: threads in this process, or a Dask cluster.

SLAM's SVRs of one kernel (one gamma, one CV fold) share the kernel matrix
and its eigen decomposition; only the targets differ.  A solve over all
pixels is cut into *pixel blocks* (:func:`pixel_blocks`), solved
independently and put back together.  :class:`BlockRunner` runs the blocks
either in a thread pool of this process or on a Dask cluster
(``dask.distributed.Client``, the ``scale`` extra): there the kernel and
its eigen decomposition are scattered to every worker once per kernel, the
targets once per block and target matrix, and only ``C``, ``epsilon`` and the
solutions travel for each point of the (C, epsilon) grid (the solutions
without the solver's warm-start state, which no caller reads).
:meth:`BlockRunner.submit_many` puts every (C, epsilon) problem of a kernel
on the cluster at once, so that the grid search can build the next kernel
and read the last kernel's solutions while the workers solve;
:meth:`BlockRunner.solve_groups` does the same for problems of different
kernels (the final fits' gamma groups), and in process puts all their blocks
in one thread pool, so that no thread waits for another group's slowest block.

The block layout depends on the number of blocks asked for (``n_workers``),
never on where the blocks run, and a block's solution depends only on its
inputs (BLAS single-threaded in every block): a fit on a cluster is
bit-identical to the in-process fit with the same ``n_workers``.  (Cutting
the pixels differently changes the solutions at the rounding level, ~1e-10,
because the solver's matrix products see blocks of other sizes.)

Dask is never imported here: a client is used through its methods
(``scatter``, ``submit``, ``gather``, ``nthreads``), so the core of the
package runs without the extra.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from ..svr import KernelEig, SVRBatchSolution
from ._util import one_blas_thread

__all__ = ["BlockRunner", "pixel_blocks"]

#: Environment variable that Dask's nanny sets in its worker processes (``65536`` by default).
#: With it set, glibc serves every allocation above 128 kB by ``mmap`` and gives it back at
#: once, so each of the solver's (pixels x stars) temporaries costs fresh page faults.
MALLOC_ENV = "MALLOC_TRIM_THRESHOLD_"


def pixel_blocks(n_pix: int, n_workers: int) -> np.ndarray:
    """Edges of the pixel blocks of one solve.

    Parameters
    ----------
    n_pix : int
        Number of targets (pixels) in the solve.
    n_workers : int
        Workers the blocks are meant for (threads, or Dask worker threads).

    Returns
    -------
    (n_block + 1,) int array
        Block ``k`` is pixels ``edges[k]:edges[k + 1]``.  One block when
        ``n_workers`` is 1 or there are fewer than 16 pixels; otherwise
        about two blocks per worker (load balance), at most one per 64 pixels
        and at least one per worker, and never more workers than ``n_pix // 8``.
    """
    nw = max(1, min(int(n_workers), n_pix // 8 or 1))
    if nw == 1:
        return np.array([0, n_pix])
    n_chunks = min(2 * nw, max(n_pix // 64, nw))
    return np.linspace(0, n_pix, n_chunks + 1).astype(int)


def _rows(a, lo: int, hi: int, n_pix: int):
    """Rows ``lo:hi`` of a per-pixel array (first axis ``n_pix``); scalars and other shapes as they are."""
    return a[lo:hi] if np.ndim(a) >= 1 and np.shape(a)[0] == n_pix else a


def _concat(parts: list[SVRBatchSolution]) -> SVRBatchSolution:
    """One solution from the solutions of consecutive pixel blocks."""
    if len(parts) == 1:
        return parts[0]
    cat = np.concatenate
    return SVRBatchSolution(beta=cat([p.beta for p in parts]), intercept=cat([p.intercept for p in parts]),
                            gap=cat([p.gap for p in parts]), n_iter=cat([p.n_iter for p in parts]),
                            converged=cat([p.converged for p in parts]),
                            state=tuple(cat([p.state[i] for p in parts]) for i in range(len(parts[0].state))))


def _solve_block(fn: Callable, ke: KernelEig, Y: np.ndarray, C, eps, kw: dict) -> SVRBatchSolution:
    """One block on a worker, BLAS single-threaded (the result must not depend on the worker).

    In a worker process this sets the limit (Dask's nanny also starts workers
    with one BLAS thread); in a worker thread of the calling process the limit
    is already held by the caller (see :meth:`BlockRunner.solve`).
    """
    with one_blas_thread():
        return dataclasses.replace(fn(ke, Y, C, eps, **kw), state=())


def _worker_malloc_env(caller_pid: int) -> str | None:
    """The value of :data:`MALLOC_ENV` in a Dask worker's process (run on each worker).

    None in the caller's own process (workers in threads): glibc reads the variable at
    process start, and Dask's nanny sets it in the environment of the process that starts
    worker processes after that process has started.
    """
    return None if os.getpid() == caller_pid else os.environ.get(MALLOC_ENV)


class BlockRunner:
    """Solve pixel blocks in threads of this process or on a Dask cluster.

    Parameters
    ----------
    n_workers : int
        Sets the block layout (:func:`pixel_blocks`) and, without a client,
        the number of threads.
    client : dask.distributed.Client, optional
        Run the blocks on this client's cluster.  The layout is still set by
        ``n_workers``, so the result equals the in-process one bit for bit.

    Notes
    -----
    With a client, the last kernel (:class:`~mdslam.svr.KernelEig`) and,
    apart from it, the last target matrix given to :meth:`solve` are kept
    scattered on the cluster (recognised by identity, not content): the
    grid search calls :meth:`solve` once per (C, epsilon) with the same
    kernel and targets, or (``cv_prune``) with the same kernel and other
    targets.  Scattered data lost with a worker cannot be recovered by Dask:
    the blocks of a problem whose futures were cancelled or whose worker
    was killed are scattered again and resubmitted once (with a warning).
    On the first use of a client its workers are asked for
    :data:`MALLOC_ENV`; set (Dask's nanny sets it), the blocks took 1.6-1.9x
    the CPU time (``benchmarks/README.md``), and a :class:`RuntimeWarning` says how to start the
    workers without it (:func:`mdslam.batch.local_cluster`).
    """

    def __init__(self, n_workers: int = 1, client: Any = None):
        self.n_workers = max(int(n_workers), 1)
        self.client = client
        self._held_ke: tuple | None = None     # (ke, its future on every worker)
        self._held_y: tuple | None = None      # (Y, edges, Y-block futures)
        self._checked = client is None

    @classmethod
    def for_fit(cls, n_workers: int | None, client: Any = None) -> BlockRunner:
        """The runner of a fit: ``n_workers`` None with a client means the cluster's worker threads.

        Parameters
        ----------
        n_workers : int or None
            Number of blocks' workers; None: 1 in process, the total
            ``nthreads`` of the cluster with a client.
        client : dask.distributed.Client, optional
        """
        if n_workers is None:
            n_workers = sum(client.nthreads().values()) if client is not None else 1
        return cls(n_workers, client)

    def solve(self, fn: Callable, ke: KernelEig, Y: np.ndarray, C, eps, **kw) -> SVRBatchSolution:
        """``fn(ke, Y, C, eps, **kw)`` solved block by block.

        Parameters
        ----------
        fn : callable
            A batched solver of :mod:`mdslam.svr` (``solve_svr_staged``,
            ``solve_svr_exact``) or one with the same signature.
        ke : KernelEig
            Kernel of the ``n`` training stars.
        Y : (n_pix, n) array
            Targets.
        C, eps : float, (n_pix,) or (n_pix, n) arrays
            Box bounds and tube half-widths; per-pixel rows are cut by block.
        **kw
            Passed to ``fn`` unchanged.

        Returns
        -------
        SVRBatchSolution
            Over all ``n_pix`` targets, in their order; on a cluster without
            the warm-start ``state`` (an empty tuple: it is not sent back).
        """
        P = Y.shape[0]
        edges = pixel_blocks(P, self.n_workers)
        nb = edges.size - 1
        # OpenBLAS's thread count is process-wide and threadpoolctl lets only one thread at a time
        # change it: a limit set inside a block running in a pool thread (or a Dask worker thread of
        # this process) may do nothing, and the first block to finish would restore the multithreaded
        # BLAS under the others. So the thread handing out the blocks holds the limit until all are back.
        with one_blas_thread():
            if self.client is None and nb == 1:
                return fn(ke, Y, C, eps, **kw)
            if self.client is None:
                def part(k):
                    lo, hi = edges[k], edges[k + 1]
                    return fn(ke, Y[lo:hi], _rows(C, lo, hi, P), _rows(eps, lo, hi, P), **kw)

                with ThreadPoolExecutor(max_workers=min(self.n_workers, nb)) as ex:
                    return _concat(list(ex.map(part, range(nb))))
            return self._gather(self._submit(fn, ke, Y, C, eps, kw), (fn, ke, Y, C, eps, kw))

    def solve_many(self, fn: Callable, ke: KernelEig, Y: np.ndarray, problems: Iterable[tuple], *,
                   window: int = 4, **kw) -> Iterator[SVRBatchSolution]:
        """Solutions of ``fn(ke, Y, C, eps, **kw)`` for each ``(C, eps)`` of ``problems``, in order.

        In process this is :meth:`solve` problem after problem.  With a client,
        up to ``window`` problems are on the cluster at once, so that workers
        do not wait while this process reads the previous solution.

        Parameters
        ----------
        fn, ke, Y, **kw : as for :meth:`solve`.
        problems : iterable of (C, eps)
            Read lazily, at most ``window`` ahead of the solutions handed out.
        window : int
            Problems in flight on the cluster.

        Yields
        ------
        SVRBatchSolution, one per problem.
        """
        if self.client is None:
            for C, eps in problems:
                yield self.solve(fn, ke, Y, C, eps, **kw)
            return
        pending: deque = deque()
        with one_blas_thread():
            for C, eps in problems:
                pending.append((self._submit(fn, ke, Y, C, eps, kw), (fn, ke, Y, C, eps, kw)))
                if len(pending) >= max(int(window), 1):
                    yield self._gather(*pending.popleft())
            while pending:
                yield self._gather(*pending.popleft())

    def submit_many(self, fn: Callable, ke: KernelEig, Y: np.ndarray, problems: Iterable[tuple],
                    **kw) -> Iterator[SVRBatchSolution]:
        """Like :meth:`solve_many`, but on a cluster every problem is submitted before this returns.

        The caller can then do other work (build the next kernel, read the
        previous kernel's solutions) while the workers solve; the solutions
        are gathered in order as the returned iterator is read.  In process
        the problems are solved as it is read (:meth:`solve_many`).

        Parameters
        ----------
        fn, ke, Y, **kw : as for :meth:`solve`.
        problems : iterable of (C, eps)

        Returns
        -------
        iterator of SVRBatchSolution, one per problem, in order.
        """
        if self.client is None:
            return self.solve_many(fn, ke, Y, problems, **kw)
        with one_blas_thread():
            sent = [(self._submit(fn, ke, Y, C, eps, kw), (fn, ke, Y, C, eps, kw)) for C, eps in problems]
        return self._gather_all(sent)

    def solve_groups(self, fn: Callable, problems: Iterable[tuple], *, window: int = 2,
                     **kw) -> list[SVRBatchSolution]:
        """Solutions of ``fn(ke, Y, C, eps, **kw)`` for each ``(ke, Y, C, eps)`` of ``problems``, in order.

        Each problem is cut into the blocks of :meth:`solve` (:func:`pixel_blocks`), so each
        solution is bit-identical to :meth:`solve`'s.  With one worker in process the problems
        are solved one after the other.  With more, the blocks of every problem go to one pool
        of ``n_workers`` threads as ``problems`` is read, in its order: a thread that finishes
        the last blocks of one problem starts on the next problem's blocks instead of waiting
        for the slowest block, and ``problems`` (a generator may build the next kernel) is
        read while the earlier blocks run; the next problem is read once the one ``window``
        places before it is solved, so that at most ``window`` problems' inputs are held.  With a client every problem is submitted before
        the first solution is gathered.  With more than one worker or a client, ``problems``
        is read with BLAS limited to one thread (the limit is process-wide and held for the
        blocks, see :meth:`solve`).

        Parameters
        ----------
        fn, **kw : as for :meth:`solve`.
        problems : iterable of (ke, Y, C, eps)
            Kernel, targets ``(n_pix, n)`` and bounds of each problem, as for :meth:`solve`.
        window : int
            Problems in the thread pool at once (in process, more than one worker).

        Returns
        -------
        list of SVRBatchSolution, one per problem (without ``state`` on a cluster).
        """
        if self.client is None and self.n_workers == 1:
            return [self.solve(fn, ke, Y, C, eps, **kw) for ke, Y, C, eps in problems]
        with one_blas_thread():
            if self.client is not None:
                sent = [(self._submit(fn, ke, Y, C, eps, kw), (fn, ke, Y, C, eps, kw)) for ke, Y, C, eps in problems]
                return [self._gather(futures, problem) for futures, problem in sent]
            with ThreadPoolExecutor(max_workers=self.n_workers) as ex:
                sent, it = [], iter(problems)
                while True:
                    if len(sent) >= window:          # at most ``window`` problems (kernels) held at once
                        wait(sent[-window])
                    if (problem := next(it, None)) is None:
                        break
                    ke, Y, C, eps = problem
                    P = Y.shape[0]
                    edges = pixel_blocks(P, self.n_workers)
                    sent.append([ex.submit(fn, ke, Y[lo:hi], _rows(C, lo, hi, P), _rows(eps, lo, hi, P), **kw)
                                 for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
                return [_concat([f.result() for f in futs]) for futs in sent]

    def _gather_all(self, sent: list) -> Iterator[SVRBatchSolution]:
        """The solutions of :meth:`submit_many`'s problems, gathered in order."""
        with one_blas_thread():
            for futures, problem in sent:
                yield self._gather(futures, problem)

    def _gather(self, futures: list, problem: tuple) -> SVRBatchSolution:
        """The blocks' solutions; if a worker was lost with scattered data, scatter again and resubmit once."""
        try:
            return _concat(self.client.gather(futures))
        except (CancelledError, Exception) as exc:
            if not isinstance(exc, CancelledError) and type(exc).__name__ != "KilledWorker":
                raise
            warnings.warn(f"pixel blocks lost with a Dask worker ({type(exc).__name__}): scattering the kernel "
                          "again and resubmitting them", RuntimeWarning, stacklevel=3)
            self.release()
            if hasattr(self.client, "wait_for_workers"):     # a lost worker is restarted by its nanny
                self.client.wait_for_workers(1, timeout=120)
            return _concat(self.client.gather(self._submit(*problem)))

    def _submit(self, fn: Callable, ke: KernelEig, Y: np.ndarray, C, eps, kw: dict) -> list:
        """Futures of the blocks of one problem on the cluster."""
        P = Y.shape[0]
        edges = pixel_blocks(P, self.n_workers)
        ke_f, y_f = self._scattered(ke, Y, edges)
        futures = []
        for k in range(edges.size - 1):
            lo, hi = edges[k], edges[k + 1]
            futures.append(self.client.submit(_solve_block, fn, ke_f, y_f[k], _rows(C, lo, hi, P),
                                              _rows(eps, lo, hi, P), kw, pure=False))
        return futures

    def _scattered(self, ke: KernelEig, Y: np.ndarray, edges: np.ndarray) -> tuple:
        """Futures of ``ke`` (on every worker) and of the target blocks, each scattered once while held."""
        if not self._checked:
            self._checked = True
            self._check_malloc()
        hk = self._held_ke
        if hk is None or hk[0] is not ke:
            self._held_ke = None               # drop the previous kernel's future first
            self._held_ke = (ke, self.client.scatter(ke, broadcast=True, hash=False))
        hy = self._held_y
        if hy is None or hy[0] is not Y or not np.array_equal(hy[1], edges):
            self._held_y = None
            y_f = self.client.scatter([Y[edges[k]:edges[k + 1]] for k in range(edges.size - 1)], hash=False)
            self._held_y = (Y, edges, y_f)
        return self._held_ke[1], self._held_y[2]

    def _check_malloc(self) -> None:
        """Warn once if the cluster's workers run with :data:`MALLOC_ENV` set."""
        try:
            values = self.client.run(_worker_malloc_env, os.getpid())
        except Exception:  # noqa: BLE001 - a client without ``run`` or a failed call: no check, no error
            return
        bad = sorted({str(v) for v in dict(values).values() if v is not None})
        if bad:
            warnings.warn(f"Dask workers run with {MALLOC_ENV}={','.join(bad)} (Dask's nanny default): the "
                          "pixel blocks take 1.6-1.9x the CPU time; start them without it "
                          "(mdslam.batch.local_cluster, or the Dask option distributed.nanny.pre-spawn-environ)",
                          RuntimeWarning, stacklevel=4)

    def release(self) -> None:
        """Forget the scattered kernel and targets (their cluster memory is freed once no task needs them)."""
        self._held_ke = self._held_y = None
