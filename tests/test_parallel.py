"""The build's text work gives the same results on worker processes as in this one."""

from __future__ import annotations

import os

import numpy as np
import pytest

from similar_articles import parallel
from similar_articles.features import copies, lexical

PARENT = os.getpid()
multicore = pytest.mark.skipif(parallel.worker_count() < 2, reason="needs two cores")


def _pids(items):
    return [os.getpid()] * len(items)


def _tagged(items):
    return [(os.getpid(), i) for i in items]


def _dies_in_a_worker(items):
    if os.getpid() != PARENT:
        os._exit(1)  # as a worker killed for memory would
    return list(items)


@pytest.fixture(scope="module")
def texts(news100) -> list[str]:
    """Real article texts, enough of them for several chunks."""
    bodies = [row["body"] or row["title"] for row in news100]
    return [f"{bodies[i % len(bodies)]} {i}" for i in range(2 * parallel.MIN_CHUNK + 500)]


@multicore
def test_term_counts_and_sketches_are_the_same_on_workers(texts):
    alone_counts, alone_sketches = lexical.term_counts(texts), copies.sketches(texts)
    with parallel.workers():
        counts, sketches = lexical.term_counts(texts), copies.sketches(texts)
    assert (counts != alone_counts).nnz == 0 and counts.shape == alone_counts.shape
    np.testing.assert_array_equal(sketches[0], alone_sketches[0])
    np.testing.assert_array_equal(sketches[1], alone_sketches[1])


@multicore
def test_large_inputs_run_on_other_processes_in_order():
    items = list(range(3 * parallel.MIN_CHUNK + 7))
    with parallel.workers():
        tagged = [pair for part in parallel.map_chunks(_tagged, items) for pair in part]
        with parallel.workers():  # an inner block reuses the outer workers
            inner = {pid for part in parallel.map_chunks(_pids, items) for pid in part}
    assert [i for _, i in tagged] == items
    assert PARENT not in {pid for pid, _ in tagged} and PARENT not in inner


def test_outside_a_block_or_small_inputs_run_here():
    assert parallel.map_chunks(_pids, list(range(5000))) == [[PARENT] * 5000]
    with parallel.workers():
        assert parallel.map_chunks(_pids, list(range(10))) == [[PARENT] * 10]


@multicore
def test_a_dead_worker_costs_time_not_results(caplog):
    items = list(range(3 * parallel.MIN_CHUNK))
    with parallel.workers():
        parts = parallel.map_chunks(_dies_in_a_worker, items)
    assert [i for part in parts for i in part] == items
    assert "worker process died" in caplog.text


def _private_memory_after_a_collection(items):
    """The worker's own (copied) memory after a full collection, in bytes."""
    import gc

    gc.collect()
    with open("/proc/self/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return [int(fields["Private_Dirty"].split()[0]) * 1024] * len(items)


@multicore
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux /proc")
def test_workers_do_not_copy_the_build_processes_memory():
    """A worker's garbage collection must not write to (and so copy) the objects it
    inherited: at 1M articles that doubled a build's memory and ran out of it."""
    import gc

    held = [{"title": f"article {i}", "terms": [i, i + 1]} for i in range(1_500_000)]  # ~590 MB of objects
    with parallel.workers():
        copied = max(size for part in parallel.map_chunks(_private_memory_after_a_collection,
                                                          list(range(4 * parallel.MIN_CHUNK)))
                     for size in part)
    assert gc.get_freeze_count() == 0  # the parent's collector is back as it was
    assert copied < 100 * 2**20, f"a worker copied {copied / 2**20:.0f} MB"
    del held


def test_a_build_short_of_memory_runs_here_rather_than_fork(monkeypatch, caplog):
    """Where a fork could double the build's memory past what is free, the work stays in
    this process (one core) and says why, instead of being killed for memory."""
    monkeypatch.setattr(parallel, "_memory_free", lambda: 512 * 2**20)
    items = list(range(3 * parallel.MIN_CHUNK))
    with parallel.workers(2):
        first, second = parallel.map_chunks(_pids, items), parallel.map_chunks(_pids, items)
    assert first == second == [[PARENT] * len(items)]
    assert caplog.text.count("the build's text work runs on one core") == 1  # said once a block, not once a call


def test_memory_readings_are_there_on_linux():
    held, free = parallel._memory_held(), parallel._memory_free()
    if not os.path.exists("/proc/meminfo"):
        pytest.skip("this system has no /proc")
    assert held is not None and free is not None
    assert 0 < held < free  # the test process is small beside a machine that can run the suite
