"""Built articles' boxes as articles pile up since the build: the ranking path of a
call (a built article's box, k=2, under the rules; recommend less its result objects)
with 0, 100, 1,000 and 4,000 articles added (real NewsArticles text and vectors, added
to serving states in memory: nothing is written to the index), on an index built by
bench_recommend.py --keep.

    .venv/bin/python benchmarks/bench_added.py /tmp/changed1m/1000000-auto
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_changes import NOW  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path, help="an index folder bench_recommend.py --keep built")
    parser.add_argument("--calls", type=int, default=2000, help="boxes timed at each count (default 2,000)")
    args = parser.parse_args()

    from similar_articles import Article, Recommender, boxrules
    from similar_articles.journal import add_record, as_record
    from similar_articles.pools import Request, indexed_sources

    C.print_machine("bench_added: built articles' boxes with articles added since the build")
    articles, real = C.news_articles()
    rec = Recommender.load(args.index, verify=False, reload_interval=None)
    settings, model, rng = rec.config.ranking, rec.encoder.model_id, np.random.default_rng(1)
    state, seq, rows = rec.state, rec.state.journal_seq, []
    built = state.listed_count()
    for total in (0, 100, 1000, 4000):
        grow = total - (len(state.table) - built)
        if grow:
            picks = rng.integers(len(articles), size=grow)
            added = [Article.from_row({"id": f"added-{seq}-{i}", "title": articles[p].title, "body": articles[p].body,
                                       "section": articles[p].section,
                                       "published_at": (NOW - timedelta(hours=3)).isoformat()})
                     for i, p in enumerate(picks.tolist())]
            seq += 1
            state, _ = state.with_record(as_record(add_record(added, real[picks], model), seq), model)
        request = Request(2, settings, NOW.timestamp(), np.zeros(0, np.int64), None, False)
        sources = rng.integers(built, size=args.calls)

        def box(p: int) -> None:
            boxrules.rank(state, indexed_sources(state, np.array([p])), request, 2, settings, {})

        ms = C.latencies_ms(box, sources.tolist(), warmup=200)
        rows.append([f"{len(state.table):,}", f"{total:,}", f"{np.percentile(ms, 50):.3f}",
                     f"{np.percentile(ms, 90):.3f}", f"{np.percentile(ms, 99):.3f}"])
        print(f"{total:,} added: p50 {np.percentile(ms, 50):.3f} ms", flush=True)
    C.print_table(["articles", "added since the build", "box p50 ms", "p90 ms", "p99 ms"], rows)


if __name__ == "__main__":
    main()
