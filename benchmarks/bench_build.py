"""The nightly rebuild: full build, incremental rebuild and peak memory at 100k rows.

Every build runs as `similar-articles build` in a fresh process, as cron runs it, so the
times include Python start-up, imports and loading the model.

1. Full build of the real NewsArticles corpus minus a held-out 1%, with an empty cache
   (encoding dominates): wall time and articles/s.
2. Rebuild after 1% of the articles changed (a correction appended) and the held-out 1%
   added: wall time, which must stay within 10% of the full build's.
3. A build over 100,000 rows with precomputed vectors (a Parquet vector column; real
   NewsArticles rows recycled with their real bodies, synthetic vectors fitted to the
   real ones): peak resident memory of the build process, which must stay under 1 GB.

With ``--engine ray`` it measures the Ray engine instead (docs/scale.md): full builds
of the corpus with an empty cache on the local engine and on Ray with 1 and 2 encoding
actors, in alternation (``--repeats`` rounds, other work on the machine shifts them all
alike), each in a fresh process that starts its own local Ray. "local, 1 thread" runs
with OMP_NUM_THREADS=1: the same one core an actor gets, so the pair gives Ray's
overhead at 1 actor.

    .venv/bin/python benchmarks/bench_build.py [--rows 100000] [--workdir DIR] [--subset news100]
    .venv/bin/python benchmarks/bench_build.py --engine ray [--repeats 2] [--subset news100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_machine, print_table, scaled_corpus  # noqa: E402

from similar_articles.articles import Article  # noqa: E402
from similar_articles.datasets import load_news_articles  # noqa: E402
from similar_articles.embedding import EmbeddingCache, SentenceTransformerEncoder  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from similar_articles.cli import main; sys.exit(main())"]


def run_build(args: list[str], env: dict | None = None) -> dict:
    """Run one build in a fresh process; its wall time, peak RSS and last-build.json."""
    index = Path(args[args.index("--index") + 1])
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([*CLI, "build", *args, "--progress", "log"], stdout=out, stderr=err, text=True,
                                env={**os.environ, **(env or {})})
        # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    if code != 0:
        sys.exit(f"build failed (exit {code}):\n{out}\n{err[-3000:]}")
    report = json.loads((index / "last-build.json").read_text())
    return {"wall": wall, "maxrss_mb": usage.ru_maxrss / 1024, "report": report, "stdout": out}


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def stages(report: dict) -> str:
    s = report["seconds"]
    return ", ".join(f"{k} {s[k]:.1f}" for k in ("read", "encode", "index", "candidates", "gate", "write", "publish") if k in s)


def write_parquet_with_vectors(path: Path, rows: list[dict], vectors: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1]
    schema = pa.schema([("id", pa.string()), ("title", pa.string()), ("body", pa.string()),
                        ("published_at", pa.string()), ("url", pa.string()), ("section", pa.string()),
                        ("vector", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(rows), 5000):
            part = rows[start:start + 5000]
            columns = {name: [r.get(name) for r in part] for name in schema.names[:-1]}
            flat = pa.array(vectors[start:start + len(part)].reshape(-1), pa.float32())
            columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, dim)
            writer.write_table(pa.table(columns, schema=schema))


ENGINES = {  # label: (build arguments, environment)
    "local, 1 thread": ([], {"OMP_NUM_THREADS": "1"}),
    "ray, 1 actor": (["--engine", "ray", "--ray-actors", "1"], {}),
    "local, 2 threads": ([], {}),
    "ray, 2 actors": (["--engine", "ray", "--ray-actors", "2"], {}),
}


def compare_engines(work: Path, rows: list[dict], repeats: int) -> None:
    """Full builds, empty cache, on each engine in turn, ``repeats`` rounds."""
    source = write_jsonl(work / "corpus.jsonl", rows)
    runs: dict[str, list[dict]] = {label: [] for label in ENGINES}
    for round_ in range(repeats):
        for n, (label, (extra, env)) in enumerate(ENGINES.items()):
            index = work / f"engine-{round_}-{n}"
            result = run_build([str(source), "--index", str(index), *extra], env)
            result["load"] = os.getloadavg()[0]
            runs[label].append(result)
            r = result["report"]
            print(f"round {round_ + 1}, {label}: {result['wall']:.1f} s wall, encode {r['seconds']['encode']:.1f} s, "
                  f"candidates {r['seconds'].get('candidates', 0):.1f} s, load average {result['load']:.2f}",
                  flush=True)
    table = []
    for label, results in runs.items():
        walls = [r["wall"] for r in results]
        encode = [r["report"]["seconds"]["encode"] for r in results]
        encoded = results[0]["report"]["encoded"]
        table.append([label, encoded, min(walls), float(np.median(walls)), min(encode),
                      encoded / min(encode), stages(min(results, key=lambda r: r["wall"])["report"]),
                      " / ".join(f"{r['load']:.2f}" for r in results)])
    print_table(["engine", "encoded", "best wall s", "median wall s", "best encode s", "articles/s (encode)",
                 "stages of the best (s)", "load average after each"], table)
    best = {label: min(r["wall"] for r in results) for label, results in runs.items()}
    for pair in (("local, 1 thread", "ray, 1 actor"), ("local, 2 threads", "ray, 2 actors")):
        overhead = best[pair[1]] / best[pair[0]] - 1
        print(f"{pair[1]} against {pair[0]}: {overhead:+.1%} wall (best of {repeats})")
    print(f"work dir: {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the memory build")
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--subset", choices=("full", "news100"), default="full",
                        help="news100: a quick smoke run (the 10%% limit needs the full corpus)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: compare the Ray engine (1 and 2 actors) with the local one instead")
    parser.add_argument("--repeats", type=int, default=2, help="--engine ray: rounds of the four builds")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-build-"))
    work.mkdir(parents=True, exist_ok=True)
    print_machine("bench_build: nightly rebuild")

    rows = load_news_articles(args.subset).rows
    if args.engine == "ray":
        compare_engines(work, rows, args.repeats)
        return
    rng = random.Random(0)
    one_percent = round(len(rows) * 0.01)
    held_out = set(rng.sample(range(len(rows)), one_percent))
    base = [r for i, r in enumerate(rows) if i not in held_out]
    changed = set(rng.sample(range(len(base)), one_percent))
    nightly = [dict(r, body=r["body"] + "\n\nCorrection: an earlier version misstated a date.")
               if i in changed else r for i, r in enumerate(base)] + [rows[i] for i in sorted(held_out)]
    index = work / "news-index"

    full = run_build([str(write_jsonl(work / "base.jsonl", base)), "--index", str(index)])
    fr = full["report"]
    rebuild = run_build([str(write_jsonl(work / "nightly.jsonl", nightly)), "--index", str(index)])
    rr = rebuild["report"]
    ratio = rebuild["wall"] / full["wall"]
    print_table(["build", "articles", "encoded", "wall s", "articles/s", "stages (s)", "peak RSS MB"], [
        ["full, empty cache", fr["articles"], fr["encoded"], full["wall"], fr["articles"] / full["wall"],
         stages(fr), full["maxrss_mb"]],
        [f"rebuild, {one_percent} changed + {one_percent} added", rr["articles"], rr["encoded"],
         rebuild["wall"], rr["articles"] / rebuild["wall"], stages(rr), rebuild["maxrss_mb"]],
    ])
    print(f"encoding alone: {fr['encoded'] / fr['seconds']['encode']:.1f} articles/s in the full build")
    print(f"rebuild / full = {ratio:.1%} (limit 10%): {'OK' if ratio <= 0.10 else 'OVER'}")
    gate = rr["gate"]
    print(f"rebuild gate: churn {gate['churn']:.3f}, coverage {gate['new']['coverage']:.3f}, "
          f"duplicate rate {gate['new']['duplicate_rate']:.3f}, hub share {gate['new']['hub_share']:.3f}\n")

    # 100k rows with precomputed vectors: real rows recycled, vectors fitted to the real ones.
    articles = [Article.from_row(r) for r in base]
    cache = EmbeddingCache(index / "embeddings.sqlite")
    found = cache.get_many(SentenceTransformerEncoder().model_id, [a.content_hash for a in articles])
    cache.close()
    vectors = np.vstack([found[a.content_hash] for a in articles])
    big_rows, big_vectors = scaled_corpus(articles, vectors, args.rows)
    for i, row in enumerate(big_rows[len(articles):]):
        row["body"] = articles[i % len(articles)].body  # real body sizes, not "synthetic N"
    parquet = work / f"rows-{args.rows}.parquet"
    write_parquet_with_vectors(parquet, big_rows, big_vectors)
    del big_rows, big_vectors, vectors, articles
    big = run_build([str(parquet), "--index", str(work / "big-index"), "--vector-column", "vector"])
    br = big["report"]
    print_table(["build", "rows", "articles", "parquet MB", "wall s", "stages (s)", "peak RSS MB"], [
        [f"{args.rows:,} rows, precomputed vectors", br["rows_read"], br["articles"],
         parquet.stat().st_size / 2**20, big["wall"], stages(br), big["maxrss_mb"]],
    ])
    print(f"peak RSS {big['maxrss_mb']:.0f} MB (limit 1024 MB): {'OK' if big['maxrss_mb'] < 1024 else 'OVER'}")
    print(f"work dir: {work}")


if __name__ == "__main__":
    main()
