"""What HNSW recall@10 costs at a size: build time by ef_construction, search time by
ef_search, and what IVF's inverted lists would find instead.

FAISS alone (float32 rows, inner product), over the vectors bench_recommend uses: the
3,783 real NewsArticles vectors first, then Gaussian ones fitted to them (_common.py).
Recall@10 is for 300 real-article queries against their exact 10 nearest other
articles, searched one at a time on one thread, as an unseen article's call searches.

    .venv/bin/python benchmarks/bench_hnsw_recall.py --size 1000000 --ef-construction 40 120 --ef-search 256 512 1024

A 1M run holds ~3 GB (1.5 GB of float32 rows and a graph). On 2 cores at 1M a graph
builds in ~6 min at ef_construction=40 and ~15 at 120, and IVF trains in ~18.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

QUERIES = 300
CORES = os.cpu_count() or 1


def recall_and_ms(index, vectors: np.ndarray, picks: np.ndarray, truth: list[set[int]]) -> tuple[float, float]:
    """Share of the exact 10 found by a k=11 search of each query (itself dropped), and
    the median milliseconds a search."""
    hits, times = 0, []
    for pos, expected in zip(picks.tolist(), truth):
        started = time.perf_counter()
        _, found = index.search(vectors[pos:pos + 1], 11)
        times.append(time.perf_counter() - started)
        hits += len((set(found[0].tolist()) - {pos}) & expected)
    return hits / (10 * len(truth)), 1e3 * C.median(times)


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=300_000)
    parser.add_argument("--m", type=int, default=32, help="HNSW links per vector (the library's hnsw_m)")
    parser.add_argument("--ef-construction", type=int, nargs="+", default=[40, 120])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--nprobe", type=int, nargs="*", default=[24, 96],
                        help="IVF lists scanned (about 4 * sqrt(size) lists, as the library); none: skip IVF")
    args = parser.parse_args()

    C.print_machine("bench_hnsw_recall: HNSW recall@10 by ef_construction and ef_search")
    _, real = C.news_articles()
    vectors = np.ascontiguousarray(C.scaled_vectors(real, args.size), dtype=np.float32)
    picks = np.random.default_rng(1).choice(min(len(real), args.size), size=QUERIES, replace=False)
    exact = C.exact_top(vectors, vectors[picks], 11)
    truth = [set([x for x in row.tolist() if x != pos][:10]) for pos, row in zip(picks.tolist(), exact)]
    print(f"{args.size:,} vectors ({min(len(real), args.size):,} real), m={args.m}, "
          f"{QUERIES} real-article queries\n", flush=True)

    table = []

    def measure(index, label: str, build_setting: str, search_name: str, values, apply) -> None:
        """Fill ``index`` (timed), then a table row for each search setting."""
        build_s = timed_fill(index, vectors)
        for value in values:
            apply(index, value)
            recall, ms = recall_and_ms(index, vectors, picks, truth)
            table.append([label, build_setting, f"{build_s:.0f}", f"{search_name} {value}", f"{recall:.3f}",
                          f"{ms:.2f}"])
            print(f"{label}, {build_setting}, {search_name} {value}: recall@10 {recall:.3f}, {ms:.2f} ms", flush=True)

    dim = vectors.shape[1]
    for ef_construction in args.ef_construction:
        index = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        measure(index, f"hnsw m={args.m}", f"ef_construction {ef_construction}", "ef_search", args.ef_search,
                lambda index, ef: setattr(index.hnsw, "efSearch", ef))
        del index
    if args.nprobe:
        nlist = int(4 * np.sqrt(args.size))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        measure(index, f"ivf {nlist} lists", "-", "nprobe", args.nprobe,
                lambda index, nprobe: setattr(index, "nprobe", nprobe))

    print()
    C.print_table(["index", "build setting", "build s (every core)", "search setting", "recall@10",
                   "ms a search (p50, one core)"], table)


def timed_fill(index, vectors: np.ndarray) -> float:
    """Seconds to train (IVF) and fill ``index`` on every core; searches then run on one."""
    import faiss

    faiss.omp_set_num_threads(CORES)
    started = time.perf_counter()
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    seconds = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    return seconds


if __name__ == "__main__":
    main()
