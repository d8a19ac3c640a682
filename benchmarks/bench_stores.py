"""What each vector store (IndexConfig.store) costs in memory and in relevance.

For "float", "fp16" and "sq8" HNSW stores: bytes per article FAISS holds (vectors and
graph), the cosine error against float32 for each of 300 real NewsArticles queries and
its 50 nearest articles (the pairs a box is ranked from), and on BBC News (2,224
articles, 5 topics) precision@2 of recommend_many and the share of boxes identical to
the float store's. Vectors come from the shared embedding cache.

    .venv/bin/python benchmarks/bench_stores.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NOW = datetime(2018, 6, 1, tzinfo=timezone.utc)
STORES = ("float", "fp16", "sq8")


def cosine_errors(vectors: np.ndarray, store: str) -> tuple[np.ndarray, float]:
    """|stored cosine - float32 cosine| over each query's 50 nearest, and bytes/article."""
    from similar_articles.config import IndexConfig
    from similar_articles.index import FaissIndex

    index = FaissIndex.create("hnsw" if store == "float" else f"hnsw-{store}", vectors.shape[1], IndexConfig())
    index.add(vectors)
    queries = vectors[:300]
    exact = queries @ vectors.T
    nearest = np.argsort(-exact, axis=1)[:, :50]
    errors = np.abs(index.inner_products(queries, nearest) - np.take_along_axis(exact, nearest, 1))
    return errors, index.memory_bytes() / len(vectors)


def bbc_boxes(rows, vectors, store: str, work: Path) -> list[list[str]]:
    from similar_articles import Recommender
    from similar_articles.config import Config, IndexConfig
    from similar_articles.embedding import SentenceTransformerEncoder

    config = Config(index=IndexConfig(kind="hnsw", store=store))
    rec = Recommender.build(rows, work / store, embeddings=vectors, encoder=SentenceTransformerEncoder(),
                            cache=False, config=config)
    return [[r.id for r in box] for box in rec.recommend_many([r["id"] for r in rows], k=2, now=NOW)]


def main() -> None:
    from similar_articles.datasets import load_bbc

    C.print_machine("bench_stores: vector stores")
    _, news_vectors = C.news_articles()
    rows = load_bbc().rows
    _, labels, bbc_vectors = C.bbc_articles()
    topic = dict(zip((r["id"] for r in rows), labels))
    work = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    table, reference = [], None
    try:
        for store in STORES:
            errors, per_article = cosine_errors(news_vectors, store)
            boxes = bbc_boxes(rows, bbc_vectors, store, work)
            reference = reference or boxes
            precision = np.mean([np.mean([topic[i] == topic[r["id"]] for i in box]) if box else 0.0
                                 for r, box in zip(rows, boxes)])
            same = np.mean([a == b for a, b in zip(boxes, reference)])
            table.append([store, f"{per_article:,.0f} B", f"{errors.mean():.1e}", f"{errors.max():.1e}",
                          f"{precision:.4f}", f"{same:.4f}"])
            print(f"{store}: done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    C.print_table(["store", "FAISS bytes/article (HNSW m=32)", "cosine error mean", "cosine error max",
                   "BBC precision@2", "BBC boxes = float's"], table)


if __name__ == "__main__":
    main()
