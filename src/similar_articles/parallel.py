"""Work spread over every core in forked worker processes: a build's per-article text
work (tokenising, shingling) and the export's batches.

Outside FAISS a build spends most of its time in pure-Python text work that holds the
GIL: hashed term counts and copy sketches took ~30 of ~50 s of a 20k-article build on
one core. Inside ``with workers():`` :func:`map_chunks` hands a large input to forked
worker processes in chunks: their texts go down a pipe, their arrays come back (nothing
touches the disk, and no pickle is ever read from a file). Outside that block, for small
inputs, on one core, where fork does not exist or where the machine lacks the memory to
fork safely, the work runs in this process. The results are the same either way: each
chunk is computed by the same function. :func:`forked` gives a caller its own pool whose
workers inherit what it hands them (the export's loaded index).
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import logging
import os
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, TypeVar

if TYPE_CHECKING:  # imported where workers are forked: a serving process never needs them (~35 ms)
    from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Smaller chunks cost more to ship than they save: a chunk of 256 news texts is ~0.1 s
# of tokenising or shingling and ~1-2 ms of pipe traffic (workers are forked once per
# block, ~20 ms each), so a nightly build's chunks of 512 rows split in two.
MIN_CHUNK = 256
_CHUNKS_PER_WORKER = 4  # even finish times when texts differ in length

# A forked worker may in the worst case cost as much memory again as the process held
# when it forked (every page either side writes is copied), plus its own working set.
WORKER_HEADROOM = 256 * 2**20


class _Workers:
    """Worker processes forked when their first task comes; ``work`` (what they do) and
    ``hint`` (how to get them) word the warning given when memory is too short."""

    def __init__(self, processes: int, work: str, hint: str, initializer: Callable[..., None] | None = None,
                 initargs: tuple = ()) -> None:
        self.processes = processes
        self._words = (work, hint)
        self._init = (initializer, initargs)
        self.pool: "ProcessPoolExecutor | None" = None
        self.declined = False  # not enough memory to fork: the block's work runs here
        self.froze = False

    def executor(self) -> "ProcessPoolExecutor | None":
        if self.pool is None and not self.declined:
            held, free = _memory_held(), _memory_free()
            if held is not None and free is not None and free < held + self.processes * WORKER_HEADROOM:
                self.declined = True
                log.warning("this process holds %.1f GB and %.1f GB is free: %s runs on one core rather than "
                            "fork workers that could run the machine out of memory (%s)",
                            held / 2**30, free / 2**30, *self._words)
            else:
                self.pool = self._fork()
        return self.pool

    def _fork(self) -> "ProcessPoolExecutor":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # A forked worker shares the build's memory until a page is written, and a full
        # garbage collection writes to every object it scans, on either side. Objects frozen
        # before the fork (and in each worker as it starts) are never scanned: on a ~590 MB
        # test heap a worker's collection copied 2.3 MB instead of 294. They are still freed
        # when unreferenced; cycles among them wait for the block's end. Pages the build
        # itself writes while workers live are still copied (a 1M-article build handed over
        # as one list, ~18 GB, grew to 24 GB and ran out of memory): hence the check above.
        self.froze = gc.get_freeze_count() == 0  # not if someone else froze the heap already
        if self.froze:
            gc.freeze()
        return ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_start_worker, initargs=self._init)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.froze:
            gc.unfreeze()


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    gc.freeze()  # what the worker inherited, before it makes anything of its own
    if initializer is not None:
        initializer(*initargs)  # forked: initargs are inherited as they are, not pickled


# the workers of the innermost workers() block, None outside one
_active: contextvars.ContextVar[_Workers | None] = contextvars.ContextVar("similar_articles_workers", default=None)


def thread_budget() -> int:
    """Threads native code (FAISS, onnxruntime) may run here: ``OMP_NUM_THREADS`` when
    it is set to a positive number (Ray sets it to a task's or actor's CPUs, so an
    encoding actor with one CPU runs one thread), else every core."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return os.cpu_count() or 1


def worker_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _memory_held() -> int | None:
    """This process's private memory in bytes (resident, not backed by a file), or None
    where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


def _memory_free() -> int | None:
    """Bytes this process could still allocate: the kernel's MemAvailable, or less where a
    cgroup (a container) caps memory; None where neither says."""
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    for limit_file, used_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                   "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as f:
                limit = f.read().strip()
            with open(used_file, encoding="ascii") as f:
                used = int(f.read())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge number: no cap
            room = max(0, int(limit) - used)
            free = room if free is None else min(free, room)
        break
    return free


def _can_fork(processes: int) -> bool:
    """Whether ``processes`` forked workers make sense here. fork, not spawn: a worker
    inherits the imported modules (sklearn's import alone is ~4 s) and needs no
    importable __main__, so scripts and notebooks work as they are."""
    import multiprocessing

    return processes >= 2 and "fork" in multiprocessing.get_all_start_methods()


@contextlib.contextmanager
def workers(processes: int | None = None) -> Iterator[None]:
    """Let :func:`map_chunks` inside the block use ``processes`` worker processes (all
    cores by default). Workers are forked when the first large input comes, if the
    machine has the memory for them (else the work runs here, with a warning), and
    stopped when the block ends; a block inside another one reuses the outer workers."""
    processes = processes or worker_count()
    if not _can_fork(processes) or _active.get() is not None:
        yield
        return
    block = _Workers(processes, "the build's text work",
                     "to use every core, hand over fewer rows at a time, as the nightly job does")
    token = _active.set(block)
    try:
        yield
    finally:
        _active.reset(token)
        block.close()


@contextlib.contextmanager
def forked(work: str, hint: str, initializer: Callable[..., None], initargs: tuple = (),
           processes: int | None = None) -> Iterator["ProcessPoolExecutor | None"]:
    """A pool of ``processes`` workers (all cores by default) forked from this process
    at the first task, each running ``initializer(*initargs)`` as it starts: initargs
    reach them as they are, shared with this process rather than pickled (a loaded
    index, say). None where no worker can be forked (one core, no fork, too little
    memory, with a warning worded from ``work`` and ``hint``): the caller then does the
    work itself. Stopped when the block ends."""
    processes = processes or worker_count()
    if not _can_fork(processes):
        yield None
        return
    block = _Workers(processes, work, hint, initializer, initargs)
    try:
        yield block.executor()
    finally:
        block.close()


def map_chunks(fn: Callable[[Sequence[T]], R], items: Sequence[T]) -> list[R]:
    """``[fn(chunk) for chunk in chunks of items]``, in order; the chunks run on the
    workers of an enclosing :func:`workers` block when ``items`` is large enough. ``fn``
    must be a module-level function (workers receive it by name). A worker that dies
    (killed, out of memory) costs time, not results: see :func:`in_order`."""
    block, n = _active.get(), len(items)
    pool = block.executor() if block is not None and n >= 2 * MIN_CHUNK else None
    if pool is None:
        return [fn(items)]
    chunks = max(2, min(block.processes * _CHUNKS_PER_WORKER, n // MIN_CHUNK))
    size = -(-n // chunks)
    return list(in_order(pool, fn, [(items[start:start + size],) for start in range(0, n, size)]))


def in_order(pool: "ProcessPoolExecutor", fn: Callable[..., R], tasks: Sequence[tuple], *,
             here: Callable[..., R] | None = None, who: str = "a worker process") -> Iterator[R]:
    """``fn(*task)`` of every task, in order, computed on ``pool``'s workers. Every task
    is submitted before this returns (a fork pool forks its workers then). A worker that
    dies (killed, out of memory) costs time, not results: the tasks not yet returned run
    here, through ``here`` (default ``fn``), and a warning names ``who`` died."""
    results = pool.map(fn, *zip(*tasks))
    return _finish_here_if_broken(results, tasks, here or fn, who)


def _finish_here_if_broken(results: Iterator[R], tasks: Sequence[tuple], here: Callable[..., R],
                           who: str) -> Iterator[R]:
    from concurrent.futures.process import BrokenProcessPool

    done = 0
    try:
        for result in results:
            yield result
            done += 1
    except BrokenProcessPool as exc:
        log.warning("%s died (%s); finishing its work in this process", who, exc)
    for task in tasks[done:]:
        yield here(*task)
