"""Changed boxes: what working out the boxes one live update changed costs, on an index
built by bench_recommend.py --keep (10k / 100k / 1M articles of its corpus).

It loads the index, ranks every box once (the map ``track_changes`` makes), then applies
updates to serving states in memory (nothing is written to the index) and times
``ChangeTracker.update`` alone: one added article (real NewsArticles text and vector,
published just before the time the boxes are ranked for), one replaced, one removed.
The add's own work (encoding, a new state) is not in the figure: it is the same
with or without tracking. The first updates of a run read cold pages of the memory-mapped
arrays (page faults, not tracking's work): the "warm" columns are the second half of each
kind's updates. ``--check N`` recomputes every box before and after the
first N updates of each kind and counts boxes reported wrongly (missed or extra).
Last, one rules edit of each kind (a pin, a block of the most shown article, its
unblock, a section policy) is timed through ``rules_changed``.

    .venv/bin/python benchmarks/bench_recommend.py --sizes 1000000 --kinds auto --keep --work /tmp/changed1m
    .venv/bin/python benchmarks/bench_changes.py /tmp/changed1m/1000000-auto
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NOW = datetime(2018, 1, 2, tzinfo=timezone.utc)  # just after the bench corpus's last article


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path, help="an index folder bench_recommend.py --keep built")
    parser.add_argument("--updates", type=int, default=100, help="updates of each kind timed (default 100)")
    parser.add_argument("--check", type=int, default=0, help="updates of each kind checked against every box")
    args = parser.parse_args()

    from similar_articles import Article, Recommender
    from similar_articles.journal import add_record, as_record, remove_record
    from similar_articles.tracking import ChangeTracker

    C.print_machine("bench_changes: the boxes a live update changed")
    articles, real = C.news_articles()
    started = time.perf_counter()
    rec = Recommender.load(args.index, verify=False, reload_interval=None)
    print(f"{len(rec):,} articles loaded in {time.perf_counter() - started:.1f} s", flush=True)
    model = rec.encoder.model_id
    started = time.perf_counter()
    tracker = ChangeTracker(rec.state, rec.config.ranking, 2, now=NOW)
    map_s = time.perf_counter() - started
    print(f"the map of every box: {map_s:.1f} s ({1e6 * map_s / len(rec):.0f} us a box), "
          f"{int(tracker.map.lacking.sum()):,} lacking boxes", flush=True)

    rng = np.random.default_rng(0)
    state = rec.state
    ids = rec.ids()
    rows = []
    seq = state.journal_seq
    wrong: dict[str, int] = {}
    for kind in ("add", "replace", "remove"):
        times, changed = [], []
        for i in range(args.updates):
            seq += 1
            pick = int(rng.integers(len(articles)))
            a = articles[pick]
            if kind == "remove":
                body = remove_record([ids[int(rng.integers(len(ids)))]])
            else:
                article_id = f"new-{i}" if kind == "add" else ids[int(rng.integers(len(ids)))]
                published = NOW - timedelta(hours=int(rng.integers(1, 48)))
                row = {"id": article_id, "title": a.title, "body": a.body, "url": a.url, "section": a.section,
                       "published_at": published.isoformat()}
                body = add_record([Article.from_row(row)], real[pick][None, :], model)
            after, _ = state.with_record(as_record(body, seq), model)
            check = i < args.check
            before_boxes = _every_box(rec, state) if check else None
            started = time.perf_counter()
            report = tracker.update(state, after, seq)
            times.append(1000 * (time.perf_counter() - started))
            changed.append(len(report.boxes))
            if check:
                after_boxes = _every_box(rec, after)
                truth = {k for k in before_boxes if k in after_boxes and before_boxes[k] != after_boxes[k]}
                truth -= set(report.replaced)
                wrong[kind] = wrong.get(kind, 0) + len(truth ^ set(report.boxes))
            state = after
        ms, warm = np.array(times), np.array(times[len(times) // 2:])
        rows.append([f"{len(rec):,}", kind, f"{np.percentile(ms, 50):.2f}", f"{np.percentile(ms, 99):.2f}",
                     f"{np.percentile(warm, 50):.2f}", f"{np.percentile(warm, 90):.2f}",
                     f"{np.mean(changed):.1f}", f"{max(changed)}",
                     f"{wrong[kind]} in {args.check}" if args.check else "-"])
        print(f"{kind}: p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, warm (second half) "
              f"p50 {np.percentile(warm, 50):.2f} ms, p90 {np.percentile(warm, 90):.2f} ms, "
              f"{np.mean(changed):.1f} boxes changed on average", flush=True)
    C.print_table(["articles", "update", "p50 ms", "p99 ms", "warm p50 ms", "warm p90 ms", "boxes changed (mean)", "max",
                   "boxes reported wrongly (checked updates)"], rows)
    _rules_edits(tracker, state)


def _rules_edits(tracker, state) -> None:
    """Times ``rules_changed`` for one edit of each kind, each on the rules the last left."""
    table = state.table
    live = table.live_positions()
    picks = tracker.map.picks[:tracker.map.n]
    shown = np.bincount(picks[picks >= 0])
    hub, source, pinned = table.ids[int(shown.argmax())], table.ids[int(live[0])], table.ids[int(live[1])]
    section = next(s for s in table.sections if s)
    edits = [("pin into one box", lambda r: r.with_pin({"article": pinned, "into": source})),
             ("block the most shown article", lambda r: r.with_block({"article": hub})),
             ("unblock it", lambda r: r.without_block(hub)),
             (f"policy: {section} half_life_days=3", lambda r: r.with_policy(section, {"half_life_days": 3}))]
    rows = []
    for name, edit in edits:
        after = state.with_rules(edit(state.rules), state.labels)
        started = time.perf_counter()
        report = tracker.rules_changed(state, after)
        rows.append([name, f"{1000 * (time.perf_counter() - started):.1f}", f"{len(report.boxes):,}",
                     "yes" if report.complete else "no"])
        state = after
    C.print_table(["rules edit", "ms", "boxes changed", "complete"], rows)


def _every_box(rec, state) -> dict[str, tuple]:
    """Every live article's default box in ``state`` (positions and kinds), ranked in full."""
    from similar_articles.pools import Request, indexed_sources, rank_block

    table = state.table
    live = table.live_positions()
    out = {}
    for start in range(0, len(live), 4096):
        block = live[start:start + 4096]
        ranked = rank_block(state, indexed_sources(state, block),
                            Request(2, rec.config.ranking, NOW.timestamp(), np.zeros(0, np.int64), None))
        for p, picks, kinds in zip(block.tolist(), ranked.positions.tolist(), ranked.kinds.tolist()):
            out[table.ids[p]] = (tuple(picks), tuple(kinds))
    return out


if __name__ == "__main__":
    main()
