"""What the newsroom's rules cost a call: recommend(id, k=2) on a built index without
rules against the same calls under 1,000 rules, timed in pairs (each id both ways,
the order alternating), plus the one-off compile after a rules change. Prints
Markdown; not a test. The rules are applied in memory: nothing is written to the index.

    python benchmarks/bench_rules.py --index /tmp/bench100k/100000-auto

Rules (1,000): 500 pins into single articles (half with a time window around now),
20 pins into tags, 9 pins into sections whose windows have passed, ~300 blocks
everywhere, ~170 blocks from one article's box, and 3 section policies (the default
policy and two sections, half-lives only, so the boxes are ranked alike). A second set
adds one pin in force per section, so that every box holds a pin: the worst case.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def make_rules(ids: list[str], sections: list[str], n: int, rng: np.random.Generator, now: datetime,
               every_box: bool):
    """n rules in the proportions of the module's docstring (needs an index of a few
    thousand articles at least: pins and blocks are drawn at random, without repeats)."""
    from similar_articles.rules import Rules

    pick = lambda: ids[int(rng.integers(len(ids)))]  # noqa: E731
    day = timedelta(days=1)
    pins: dict[tuple, dict] = {}
    while len(pins) < n // 2:
        article, into = pick(), pick()
        if article != into:
            window = {"from": (now - day).isoformat(), "until": (now + day).isoformat()} if len(pins) % 2 else {}
            pins[(article, into)] = {"article": article, "into": into, "slot": 1 + len(pins) % 2, **window}
    listed = list(pins.values())
    listed += [{"article": pick(), "tag": f"tag-{i}"} for i in range(n // 50)]
    listed += [{"article": pick(), "section": s, "until": (now - day).isoformat()} for s in sections[:9]]
    if every_box:
        listed += [{"article": pick(), "section": s, "slot": 2} for s in sections]
    pinned = {p["article"] for p in listed}
    everywhere = {a for a in (pick() for _ in range(3 * n // 10)) if a not in pinned}
    from_box = {(pick(), pick()) for _ in range(n - len(listed) - len(everywhere) - 3)}
    blocks = [{"article": a} for a in everywhere] + [{"article": a, "from": s} for a, s in from_box if a != s]
    policies = {"*": {"half_life_days": 30}, sections[0]: {"half_life_days": 20}, sections[1]: {"half_life_days": 40}}
    return Rules.from_document({"pins": listed, "blocks": blocks, "policies": policies})


def paired_ms(plain, ruled, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds of plain.recommend(id) and ruled.recommend(id) for each id, the two
    calls back to back (which goes first alternates), after a warm-up."""
    for article_id in ids[:50]:
        plain.recommend(article_id, k=2)
        ruled.recommend(article_id, k=2)
    gc.collect()
    clock = time.perf_counter
    a, b = np.empty(len(ids)), np.empty(len(ids))
    for i, article_id in enumerate(ids):
        order = ((plain, a), (ruled, b)) if i % 2 else ((ruled, b), (plain, a))
        for rec, out in order:
            start = clock()
            rec.recommend(article_id, k=2)
            out[i] = clock() - start
    return a * 1000, b * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from similar_articles import Recommender
    from similar_articles.labels import DEFAULT_LABELS

    C.print_machine(f"bench_rules: {args.rules:,} rules on {args.index}")
    plain = Recommender.load(args.index, verify=False, reload_interval=None)
    ids = plain.ids()
    sections = list(plain.state.table.section_names)
    rng = np.random.default_rng(0)
    now = datetime.now(timezone.utc)
    sample = [ids[int(i)] for i in rng.integers(len(ids), size=args.calls)]
    rows = []
    for name, every_box in ((f"{args.rules:,} rules", False), (f"{args.rules:,} rules, a pin in every box", True)):
        rules = make_rules(ids, sections, args.rules, rng, now, every_box)
        started = time.perf_counter()
        state = plain.state.with_rules(rules, dict(DEFAULT_LABELS))
        ruled = Recommender(state, plain.config, encoder=plain.encoder)
        ruled.recommend(sample[0], k=2)  # compiles the rules against the table
        compile_ms = (time.perf_counter() - started) * 1000
        rounds = [paired_ms(plain, ruled, sample) for _ in range(args.rounds)]
        best = min(rounds, key=lambda r: float(np.median(r[1] - r[0])))
        a, b = best
        pinned = np.array([len([i for i in ruled.recommend(x, k=2) if i.label == "Editor's pick"]) > 0
                           for x in sample[:500]])
        rows.append([name, len(rules.pins) + len(rules.blocks) + len(rules.policies), f"{np.median(a):.3f}",
                     f"{np.median(b):.3f}", f"{np.median(b - a):.4f}",
                     f"{np.percentile(a, 99):.3f} / {np.percentile(b, 99):.3f}",
                     f"{pinned.mean():.0%}", f"{compile_ms:.1f}",
                     " ".join(f"{np.median(r[1] - r[0]):.4f}" for r in rounds)])
    C.print_table(["rules", "count", "p50 no rules (ms)", "p50 rules (ms)", "p50 of paired difference (ms)",
                   "p99 no rules / rules (ms)", "boxes with a pin", "compile + first call (ms)",
                   "paired difference by round"], rows)
    print(f"\n{len(sample):,} calls recommend(id, k=2) a round, {args.rounds} rounds (best shown); "
          f"{len(ids):,} articles, {len(sections)} sections")


if __name__ == "__main__":
    main()
