"""How to encode articles longer than the model's 256 word pieces: lead vs chunks.

Measures precision@k of the raw encoder (exact cosine, no ranking layer) on a stratified
sample of BBC News, where the topic is the label, and the encoding time of each mode.

    .venv/bin/python benchmarks/bench_long_text.py [--per-topic 100]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from similar_articles import Article
from similar_articles.config import EncoderConfig
from similar_articles.paths import data_dir
from similar_articles.datasets import load_bbc
from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles


def precision_at(vectors: np.ndarray, labels: np.ndarray, k: int) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    return float((labels[top] == labels[:, None]).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-topic", type=int, default=100)
    args = parser.parse_args()
    rows = load_bbc().rows
    sample, counts = [], {}
    for row in rows:  # the first N of each topic: deterministic
        if counts.get(row["section"], 0) < args.per_topic:
            counts[row["section"]] = counts.get(row["section"], 0) + 1
            sample.append(row)
    articles = [Article.from_row(r) for r in sample]
    labels = np.array([a.section for a in articles])
    words = np.array([len(a.text.split()) for a in articles])
    print(f"BBC sample: {len(articles)} articles, {len(counts)} topics; words per article "
          f"median {np.median(words):.0f}, {np.mean(words > 200):.0%} longer than ~200 words")
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    cache = EmbeddingCache(data_dir() / "embeddings.sqlite")
    print(f"{'mode':<8}{'seconds':>9}{'art/s':>8}{'p@2':>8}{'p@5':>8}{'p@10':>8}")
    for mode in ("lead", "chunks"):
        encoder = SentenceTransformerEncoder(EncoderConfig(long_text=mode))
        encoder.model
        # Time a cold encode of a fixed slice, then take the rest from the cache.
        timed = articles[:100]
        started = time.perf_counter()
        encoder.encode_articles(timed)
        seconds = time.perf_counter() - started
        vectors, _ = embed_articles(articles, encoder, cache=cache, progress=True)
        print(f"{mode:<8}{seconds:>9.1f}{len(timed) / seconds:>8.1f}"
              + "".join(f"{precision_at(vectors, labels, k):>8.3f}" for k in (2, 5, 10)))


if __name__ == "__main__":
    main()
