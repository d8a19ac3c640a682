"""Encoder back-ends on real full-length articles: speed, agreement with torch fp32,
and what the difference does to box quality (precision@2 on BBC News).

Back-ends: "torch" (sentence-transformers, fp32), "onnx" (onnxruntime, fp32 export) and
"onnx-int8" (dynamically quantised export), all from the packaged all-MiniLM-L6-v2,
long_text="lead" (title + lead up to 256 word pieces: every article here fills them).

Columns: articles/s encoding --sample full-length NewsArticles in batches of 32; the
p50 of encoding one article alone (the unseen-article path); mean and minimum cosine to
the torch vectors of the same articles; precision@2 of our boxes over all of BBC News
(--bbc-sample articles, every n-th so all topics; topic labels hidden from the
recommender), the boxes built from each back-end's vectors.

    .venv/bin/python benchmarks/bench_encode.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NOW = datetime(2018, 6, 1, tzinfo=timezone.utc)


def precision_at_2(rows, labels, vectors, encoder, work: Path) -> float:
    from similar_articles import Recommender

    shutil.rmtree(work, ignore_errors=True)
    rec = Recommender.build(rows, work, embeddings=vectors, encoder=encoder, cache=False)
    ids = [r["id"] for r in rows]
    position = {a: i for i, a in enumerate(ids)}
    boxes = rec.recommend_many(ids, k=2, now=NOW)
    shutil.rmtree(work, ignore_errors=True)
    return float(np.mean([np.mean([labels[position[r.id]] == labels[i] for r in box]) if box else 0.0
                          for i, box in enumerate(boxes)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    parser.add_argument("--sample", type=int, default=256, help="NewsArticles encoded for speed")
    parser.add_argument("--single", type=int, default=30, help="one-article encodes timed")
    parser.add_argument("--bbc-sample", type=int, default=600, help="BBC articles for precision@2 "
                        "(every n-th, all topics; 0: all 2,224). Each back-end encodes them afresh")
    parser.add_argument("--no-bbc", action="store_true", help="skip precision@2 on BBC")
    args = parser.parse_args()

    from similar_articles.articles import Article
    from similar_articles.config import EncoderConfig
    from similar_articles.paths import data_dir
    from similar_articles.datasets import load_bbc, load_news_articles
    from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles

    C.print_machine("bench_encode: encoder back-ends")
    news = [Article.from_row(r) for r in load_news_articles("full").rows if len(r["body"] or "") > 3000]
    sample = news[:args.sample]
    print(f"speed sample: {len(sample)} NewsArticles with bodies over 3,000 characters "
          f"(all past 256 word pieces)\n")
    bbc_rows = load_bbc().rows
    if args.bbc_sample:
        bbc_rows = bbc_rows[::max(1, len(bbc_rows) // args.bbc_sample)][:args.bbc_sample]
    labels = np.array([r["section"] for r in bbc_rows])
    bbc_rows = [{k: v for k, v in r.items() if k != "section"} for r in bbc_rows]
    bbc_articles = [Article.from_row(r) for r in bbc_rows]
    cache = EmbeddingCache(data_dir() / "embeddings.sqlite")
    reference = None
    table = []
    for backend in args.backends:
        encoder = SentenceTransformerEncoder(EncoderConfig(backend=backend))
        encoder.encode_articles(sample[:4])  # load / export the model outside the timing
        started = time.perf_counter()
        vectors = encoder.encode_articles(sample)
        per_s = len(sample) / (time.perf_counter() - started)
        single = C.summary(C.latencies_ms(lambda a: encoder.encode_articles([a]), news[-args.single:],
                                          warmup=3))
        if reference is None:
            reference = vectors if backend == "torch" else None
        cosine = (vectors * reference).sum(axis=1) if reference is not None else np.array([np.nan])
        precision = np.nan
        if not args.no_bbc:
            if backend == "onnx":
                # fp32 ONNX shares the torch cache key (same vectors to 1e-6): encode afresh
                bbc_vectors = encoder.encode_articles(bbc_articles)
            else:
                bbc_vectors, _ = embed_articles(bbc_articles, encoder, cache=cache, progress=True)
            precision = precision_at_2(bbc_rows, labels, bbc_vectors, encoder,
                                       data_dir() / "bench-encode" / backend)
        row = [backend, per_s, single["p50"], float(cosine.mean()), float(cosine.min()), precision]
        table.append(row)
        print(f"{backend}: {row}", flush=True)
    cache.close()
    base = table[0][1]
    base_p = table[0][5]
    print()
    C.print_table(["back-end", "articles/s", "one article p50 ms", "cosine to torch (mean)",
                   "cosine (min)", "BBC precision@2", "speed vs first", "precision change"],
                  [r + [f"{r[1] / base:.2f}x", f"{r[5] - base_p:+.4f}"] for r in table])


if __name__ == "__main__":
    main()
