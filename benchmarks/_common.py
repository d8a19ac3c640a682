"""Shared by the benchmarks: the machine they ran on, timing, tables and data.

Data: the real NewsArticles corpus (3,824 articles) encoded once with the default model
through the shared embedding cache (``data/cache/embeddings.sqlite``), plus synthetic
vectors for scale. Synthetic vectors are drawn from a Gaussian fitted to the real
vectors (their mean and full 384x384 covariance) and normalised to unit length, so
they have the real vectors' mean direction, spread and correlations between dimensions
(the things that decide how hard a nearest-neighbour search is); synthetic metadata
recycles real titles and URLs (suffixed, so no two titles collide) and real bodies with
their words shuffled, so metadata, lexical fingerprints and copy sketches cost memory
and time like real ones.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import statistics
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the machine
def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = "avx512f" if " avx512f" in text else ("avx2" if " avx2" in text else "")
    except OSError:
        pass
    versions = []
    for dist in ("similar-articles", "numpy", "faiss-cpu", "torch", "sentence-transformers",
                 "onnxruntime", "txtai", "scikit-learn"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    try:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {"cpu": f"{cpu} ({flags})" if flags else cpu, "cores": str(os.cpu_count()),
            "ram": ram, "python": platform.python_version(), "os": platform.platform(),
            "versions": ", ".join(versions), "load average at start": load}


def print_machine(title: str) -> None:
    print(f"# {title}  ({datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC})")
    for key, value in machine_info().items():
        print(f"- {key}: {value}")
    print()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, so output pastes straight into benchmarks/README.md."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    print(flush=True)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


# ---------------------------------------------------------------------- timing
def latencies_ms(fn: Callable[[object], object], args: Sequence[object], *, warmup: int = 20) -> np.ndarray:
    """Milliseconds per call of ``fn(arg)``, one timing per arg, after a warm-up."""
    for arg in args[:warmup]:
        fn(arg)
    gc.collect()
    out = np.empty(len(args))
    clock = time.perf_counter
    for i, arg in enumerate(args):
        start = clock()
        fn(arg)
        out[i] = clock() - start
    return out * 1000.0


def summary(ms: np.ndarray) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "mean": float(ms.mean()), "per_s": float(1000.0 / ms.mean())}


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def median(values) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------- data
def news_articles():
    """(Articles, vectors) of the real NewsArticles corpus, vectors from the shared
    cache (encoded once, ~2 min, by whichever benchmark or test gets there first)."""
    from similar_articles.paths import data_dir
    from similar_articles.datasets import load_news_articles
    from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles
    from similar_articles.articles import parse_articles

    articles = parse_articles(load_news_articles("full").rows)
    cache = EmbeddingCache(data_dir() / "embeddings.sqlite")
    try:
        vectors, _ = embed_articles(articles, SentenceTransformerEncoder(), cache=cache, progress=True)
    finally:
        cache.close()
    return articles, vectors


def bbc_articles(encoder=None):
    """(Articles, topic labels, vectors) of BBC News through the shared cache."""
    from similar_articles.paths import data_dir
    from similar_articles.datasets import load_bbc
    from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles
    from similar_articles.articles import parse_articles

    rows = load_bbc().rows
    articles = parse_articles(rows)
    labels = np.array([r["section"] for r in rows])
    cache = EmbeddingCache(data_dir() / "embeddings.sqlite")
    try:
        vectors, _ = embed_articles(articles, encoder or SentenceTransformerEncoder(), cache=cache,
                                    progress=True)
    finally:
        cache.close()
    return articles, labels, vectors


def synthetic_vectors(real: np.ndarray, n: int, *, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors from a Gaussian fitted to ``real`` (mean + covariance)."""
    real = np.asarray(real, dtype=np.float64)
    mean = real.mean(axis=0)
    cov = np.cov(real, rowvar=False) + 1e-6 * np.eye(real.shape[1])
    factor = np.linalg.cholesky(cov)
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = rng.standard_normal((m, real.shape[1])) @ factor.T + mean
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + m] = x
    return out


def scaled_vectors(vectors: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` vectors: the first of ``vectors`` (real ones), then Gaussian ones fitted to them."""
    if n <= len(vectors):
        return vectors[:n]
    return np.vstack([vectors, synthetic_vectors(vectors, n - len(vectors), seed=seed)])


def scaled_corpus(articles, vectors: np.ndarray, n: int, *, seed: int = 0):
    """Rows and vectors of ``n`` articles: the real ones first, then synthetic ones
    with recycled (suffixed) real titles, URLs and sections, real bodies with their
    words shuffled, dated over three years."""
    real_n = min(len(articles), n)
    extra = n - real_n
    vecs = scaled_vectors(vectors, n, seed=seed)
    rows = [{"id": a.id, "title": a.title, "body": a.body, "url": a.url, "section": a.section,
             "published_at": a.published_at.isoformat() if a.published_at else None}
            for a in articles[:real_n]]
    base = datetime(2015, 1, 1, tzinfo=timezone.utc)
    rng = np.random.default_rng(seed + 1)
    minutes = rng.integers(0, 3 * 365 * 24 * 60, size=extra)
    for i in range(extra):
        a = articles[i % len(articles)]
        # The real body's words in a random order: term statistics (what the lexical
        # fingerprints and their per-call cost see) stay real-sized, while no two
        # synthetic articles are verbatim copies (which the copy rule would collapse).
        words = a.body.split()
        body = " ".join(words[j] for j in rng.permutation(len(words)))
        rows.append({"id": f"syn-{i:07d}", "title": f"{a.title} ({i})", "body": body,
                     "url": f"{a.url or 'https://example.com/news'}?v={i}", "section": a.section,
                     "published_at": (base + timedelta(minutes=int(minutes[i]))).isoformat()})
    return rows, vecs


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-``k`` positions by inner product, in chunks (brute-force numpy)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        sims = queries[start:start + 64] @ vectors.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, part, axis=1).argsort(axis=1)[:, ::-1]
        out[start:start + 64] = np.take_along_axis(part, order, axis=1)
    return out
