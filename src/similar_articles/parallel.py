"""A build's per-article text work (tokenising, shingling) spread over every core.

Outside FAISS a build spends most of its time in pure-Python text work that holds the
GIL: hashed term counts and copy sketches took ~30 of ~50 s of a 20k-article build on
one core. Inside ``with workers():`` :func:`map_chunks` hands a large input to forked
worker processes in chunks: their texts go down a pipe, their arrays come back (nothing
touches the disk, and no pickle is ever read from a file). Outside that block, for small
inputs, on one core or where fork does not exist, the work runs in this process. The
results are the same either way: each chunk is computed by the same function.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import os
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:  # imported where a block starts: a serving process never needs them (~35 ms)
    from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Smaller chunks cost more to ship than they save: a chunk of 256 news texts is ~0.1 s
# of tokenising or shingling and ~1-2 ms of pipe traffic (workers are forked once per
# block, ~20 ms each), so a nightly build's chunks of 512 rows split in two.
MIN_CHUNK = 256
_CHUNKS_PER_WORKER = 4  # even finish times when texts differ in length

# (pool, its worker count) of the innermost workers() block, None outside one
_pool: contextvars.ContextVar[tuple["ProcessPoolExecutor", int] | None] = contextvars.ContextVar(
    "similar_articles_pool", default=None)


def worker_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def workers(processes: int | None = None) -> Iterator[None]:
    """Let :func:`map_chunks` inside the block use ``processes`` worker processes (all
    cores by default). Workers are forked on first use and stopped when the block ends;
    a block inside another one reuses the outer workers."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    processes = processes or worker_count()
    if processes < 2 or _pool.get() is not None or "fork" not in multiprocessing.get_all_start_methods():
        yield
        return
    # fork, not spawn: a worker inherits the imported modules (sklearn's import alone
    # is ~4 s) and needs no importable __main__, so scripts and notebooks work as they are.
    # A forked worker shares the build's memory until a page is written, and a full
    # garbage collection writes to every object it scans, on either side. Objects frozen
    # before the fork (and in each worker as it starts) are never scanned: on a ~590 MB
    # test heap a worker's collection copied 2.3 MB instead of 294. They are still freed
    # when unreferenced; cycles among them wait for the block's end. Pages the build
    # itself writes while workers live are still copied: a 1M-article build handed over
    # as one list (~18 GB) ran this 24 GB machine out of memory either way.
    freezing = gc.get_freeze_count() == 0  # not if someone else froze the heap already
    if freezing:
        gc.freeze()
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"), initializer=gc.freeze)
    token = _pool.set((pool, processes))
    try:
        yield
    finally:
        _pool.reset(token)
        pool.shutdown(wait=True, cancel_futures=True)
        if freezing:
            gc.unfreeze()


def map_chunks(fn: Callable[[Sequence[T]], R], items: Sequence[T]) -> list[R]:
    """``[fn(chunk) for chunk in chunks of items]``, in order; the chunks run on the
    workers of an enclosing :func:`workers` block when ``items`` is large enough. ``fn``
    must be a module-level function (workers receive it by name). A worker that dies
    (killed, out of memory) costs time, not results: its chunks run here instead."""
    active, n = _pool.get(), len(items)
    if active is None or n < 2 * MIN_CHUNK:
        return [fn(items)]
    from concurrent.futures.process import BrokenProcessPool

    pool, processes = active
    chunks = max(2, min(processes * _CHUNKS_PER_WORKER, n // MIN_CHUNK))
    size = -(-n // chunks)
    parts = [items[start:start + size] for start in range(0, n, size)]
    try:
        return list(pool.map(fn, parts))
    except BrokenProcessPool as exc:
        log.warning("a worker process died (%s); finishing its work in this process", exc)
        return [fn(part) for part in parts]
