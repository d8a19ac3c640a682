"""The subcommands that send boxes out of the library: ``export`` (files for CMS caches
and CDNs) and ``serve`` (the HTTP service)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..export import FORMATS as EXPORT_FORMATS
from .common import EXIT_OK, add_set, parse_now, with_settings


def add_export(sub) -> None:
    export = sub.add_parser(
        "export", help="write every indexed article's box to JSONL or Parquet (for CMS caches)")
    export.add_argument("--index", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True,
                        help="a .jsonl or .parquet file; with --layout per-article, a folder")
    export.add_argument("--layout", choices=("file", "per-article"), default="file",
                        help="per-article: one JSON file a box (OUT/<id>.json), rewritten only when it changed")
    export.add_argument("--changed", action="store_true",
                        help="per-article: rank only the boxes live updates changed since the folder's last "
                             "export (INDEX/changes.jsonl; every box when that cannot be known)")
    export.add_argument("--format", choices=EXPORT_FORMATS, help="default: from the file name")
    export.add_argument("-k", type=int, default=None, help="box size (default: the section policy's, else 2)")
    export.add_argument("--now", default=None,
                        help="ISO 8601 time the boxes are for (default: now); later articles are hidden")
    export.add_argument("--batch-size", type=int, default=1024, help="articles per batch (default 1024)")
    export.add_argument("--processes", type=int, default=None,
                        help="worker processes (default: one per core; 1: none)")
    add_set(export, "for this run only (the index's own settings otherwise)")
    export.set_defaults(run=_export)


def _export(args: argparse.Namespace) -> int:
    """Every live article's box, in index order (export.write_boxes)."""
    from ..export import write_box_files, write_boxes
    from ..recommender import Recommender

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} is invalid: give a positive number")
    if args.processes is not None and args.processes < 1:
        raise ConfigError(f"--processes={args.processes} is invalid: give a positive number (1: no workers)")
    now = parse_now(args.now)
    if args.changed and args.layout != "per-article":
        raise ConfigError("--changed rewrites single boxes: use it with --layout per-article")
    rec = with_settings(Recommender.load(args.index, reload_interval=None), args.set)
    started = time.perf_counter()
    if args.layout == "per-article":
        counts = write_box_files(rec, args.out, k=args.k, now=now, batch_size=args.batch_size,
                                 processes=args.processes, changed=args.changed)
        print(f"{counts['boxes']} boxes {'changed since the last export ' if counts['changed_only'] else ''}"
              f"ranked for {args.out}: {counts['written']} written, {counts['unchanged']} unchanged, "
              f"{counts['deleted']} deleted (articles no longer indexed) in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
        return EXIT_OK
    written = write_boxes(rec, args.out, fmt=args.format, k=args.k, now=now, batch_size=args.batch_size,
                          processes=args.processes)
    elapsed = time.perf_counter() - started
    print(f"wrote {written} boxes to {args.out} in {elapsed:.1f} s "
          f"({1000 * elapsed / max(written, 1):.3f} ms per article)", file=sys.stderr)
    return EXIT_OK


def add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="serve boxes over HTTP to any site backend (needs the [server] extra)")
    serve.add_argument("--index", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="default 8000")
    serve.add_argument("--workers", type=int, default=1, help="processes (default 1; one per core for throughput)")
    serve.add_argument("--token-file", type=Path, default=None,
                       help="file holding the token that write routes need (default: $SIMILAR_ARTICLES_TOKEN; "
                            "with neither, write routes answer 403)")
    serve.add_argument("--cache-max-age", type=int, default=60,
                       help="seconds a CDN may keep a box (Cache-Control; default 60, 0: no-cache)")
    serve.add_argument("--access-log", action="store_true", help="log a line a request (off by default)")
    serve.add_argument("--webhook", metavar="URL", default=None,
                       help="POST the boxes each accepted write changed to this URL (docs/http.md), with retries; "
                            "what still fails goes to INDEX/webhook-dead-letter.jsonl")
    serve.add_argument("--webhook-attempts", type=int, default=5, help="tries a payload gets (default 5)")
    serve.add_argument("--webhook-backoff", type=float, default=0.5,
                       help="seconds before the first retry, doubling after each (default 0.5)")
    serve.add_argument("--track-changes", action="store_true",
                       help="log the boxes each write and rules edit changes to INDEX/changes.jsonl, for export "
                            "--changed and the editors' page (implied by --webhook; each worker ranks every box "
                            "at start: ~50 s a million articles)")
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        from ..service.run import read_token, serve
        from ..service import ServiceSettings
    except ImportError as exc:
        raise ConfigError(f"the HTTP service needs the server extra ({exc.name} is missing): "
                          "pip install 'similar-articles[server]'") from None
    if args.cache_max_age < 0:
        raise ConfigError(f"--cache-max-age={args.cache_max_age} is invalid: give seconds, 0 or more")
    if args.webhook is not None and not args.webhook.startswith(("http://", "https://")):
        raise ConfigError(f"--webhook {args.webhook!r} is not an http:// or https:// URL")
    if args.webhook_attempts < 1 or args.webhook_backoff < 0:
        raise ConfigError("--webhook-attempts must be at least 1 and --webhook-backoff 0 or more seconds")
    serve(ServiceSettings(args.index, token=read_token(args.token_file), cache_max_age=args.cache_max_age,
                          webhook=args.webhook, webhook_attempts=args.webhook_attempts,
                          webhook_backoff=args.webhook_backoff, track_changes=args.track_changes),
          host=args.host, port=args.port, workers=args.workers, access_log=args.access_log)
    return EXIT_OK
