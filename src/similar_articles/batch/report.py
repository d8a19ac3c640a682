"""What a build tells its operator: the report (saved as last-build.json), per-stage
timing with progress bars or log lines, and the skipped rows' file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..sources import RowError
from .gate import GateReport, NullBar

log = logging.getLogger("similar_articles.batch")

STAGES = ("read", "encode", "index", "candidates", "gate", "write", "publish")
EXIT_PUBLISHED, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
SHOWN_ERRORS = 20


@dataclass
class BuildReport:
    """What a build did. ``status``: published, dry_run, refused (gate) or failed."""

    status: str
    index_root: str
    snapshot: str | None = None
    previous_snapshot: str | None = None
    sources: list[str] = field(default_factory=list)
    rows_read: int = 0
    articles: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    errors_path: str | None = None
    encoded: int = 0
    reused: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    live_updates: dict[str, int] = field(default_factory=dict)  # journal folded in: through, added, removed
    cache_pruned: int = 0  # cache rows no recent build used, deleted (prune_cache_after)
    cache_repaired: int = 0  # damaged cache rows dropped and encoded again
    seconds: dict[str, float] = field(default_factory=dict)
    gate: GateReport | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return {"published": EXIT_PUBLISHED, "dry_run": EXIT_PUBLISHED,
                "refused": EXIT_REFUSED}.get(self.status, EXIT_FAILED)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["gate"] = self.gate.to_dict() if self.gate else None
        data["exit_code"] = self.exit_code
        return data

    def summary(self) -> str:
        """The lines an operator reads in the job's log."""
        counts = (f"{self.articles} articles ({self.encoded} encoded, {self.reused} from cache; "
                  f"{self.skipped} rows skipped)")
        head = {
            "published": f"published {counts} as {self.snapshot}",
            "dry_run": f"dry run: would publish {counts}; nothing was published",
            "refused": (f"refused: {counts} failed the quality gate "
                        f"({', '.join(c.problem() for c in self.gate.failed)}); "
                        "nothing was published. Rerun with --force to publish anyway, or adjust "
                        "the limits with --gate NAME=VALUE") if self.gate else "refused",
            "failed": f"failed: {self.error}; nothing was published",
        }[self.status]
        skipped = ", ".join(f"{reason} {n}" for reason, n in
                            sorted(self.skipped_by_reason.items(), key=lambda kv: -kv[1]))
        lines = [head,
                 f"  rows read   {self.rows_read} from {len(self.sources)} source(s)",
                 f"  skipped     {self.skipped}" + (f": {skipped} (rows: {self.errors_path})" if self.skipped else ""),
                 f"  encoded     {self.encoded}, reused {self.reused} (cache or identical text)",
                 f"  cache       {self.cache_pruned} unused entries pruned, {self.cache_repaired} damaged "
                 "entries encoded again",
                 f"  vs previous +{self.added} added, {self.changed} changed, -{self.removed} removed"
                 + (f" ({Path(self.previous_snapshot).name})" if self.previous_snapshot else " (first build)")]
        if self.live_updates.get("added") or self.live_updates.get("removed"):
            lines.append(f"  live updates folded in: {self.live_updates['added']} added, "
                         f"{self.live_updates['removed']} removed (journal through record {self.live_updates['through']})")
        if self.gate:
            lines += [f"  gate        {'passed' if self.gate.passed else 'FAILED'}"
                      + (" (overridden by --force)" if self.gate.forced and not self.gate.passed else "")]
            lines += [f"    {line}" for line in self.gate.lines()]
        stages = ", ".join(f"{name} {self.seconds[name]:.1f} s" for name in STAGES if name in self.seconds)
        lines.append(f"  time        {stages}; total {self.seconds.get('total', 0):.1f} s")
        return "\n".join(lines)


class _LogBar:
    """Plain progress lines for logs: one every ``every`` seconds and one at the end."""

    def __init__(self, stage: str, unit: str, total: int | None, every: float = 15.0):
        self.stage, self.unit, self.total, self.every = stage, unit, total, every
        self.n, self.postfix = 0, ""
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line("")

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        self._line("done, ")

    def _line(self, prefix: str) -> None:
        elapsed = time.monotonic() - self.started
        of = f"/{self.total}" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        log.info("%s: %s%d%s %s in %.1f s%s", self.stage, prefix, self.n, of, self.unit, elapsed, extra)


class Stages:
    """Per-stage timing and a progress display: tqdm bars on a terminal, log lines otherwise."""

    def __init__(self, progress: bool | str):
        self.quiet = progress is False or progress == "none"
        self.bars = progress is True or progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        self.seconds: dict[str, float] = {}

    def bar(self, stage: str, unit: str, total: int | None = None, position: int = 0):
        if self.quiet:
            return NullBar()
        if self.bars:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc=stage, unit=unit, file=sys.stderr, position=position,
                        leave=True, dynamic_ncols=True)
        return _LogBar(stage, unit, total)

    @contextlib.contextmanager
    def stage(self, name: str, unit: str | None = None, total: int | None = None) -> Iterator[Any]:
        """Time a stage; with a ``unit`` (plural: "articles") also show its progress."""
        bar = self.bar(name, unit, total) if unit else NullBar()
        started = time.perf_counter()
        try:
            yield bar
        finally:
            self.add(name, time.perf_counter() - started)
            bar.close()
            if not unit and not self.quiet:
                log.info("%s: done in %.1f s", name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)


class ErrorSink:
    """Skipped rows: counted by reason, the first few logged, all written to a JSONL file
    (written beside and renamed at the end, so the file always describes one whole build)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._file = open(self._partial, "w", encoding="utf-8")
        self.count = 0
        self.by_reason: dict[str, int] = {}

    def add(self, error: RowError) -> None:
        self.count += 1
        key = error.summary_key
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        self._file.write(json.dumps(error.to_dict(), ensure_ascii=False) + "\n")
        if self.count <= SHOWN_ERRORS:
            log.warning("skipped: %s", error)
        elif self.count == SHOWN_ERRORS + 1:
            log.warning("skipped: more rows; all of them are listed in %s", self.path)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            os.replace(self._partial, self.path)




def save_report(path: Path, report: BuildReport) -> None:
    """``last-build.json``: what monitoring reads after every build, whatever happened."""
    try:
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)
