"""The quality gate: boxes for a fixed sample of articles in the new build and in the
snapshot it replaces, compared against limits; a build that regresses is refused."""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..artifacts import read_artifacts
from ..config import Config, RankingConfig
from ..errors import ConfigError, SimilarArticlesError
from ..pools import Request, indexed_sources, rank_block
from ..snapshot import CURRENT, latest_snapshot_dir
from ..state import ServingState

GATE_FILE = "gate.json"
GATE_BOXES_FILE = "gate-boxes.json"
GATE_VERSION = 1  # bump when a metric's definition changes: stored numbers stop comparing


class NullBar:
    """A progress bar that shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class GateLimits:
    """When a build is not published. Shares are in [0, 1]; None turns a check off.

    The gate fills boxes of ``k`` items for up to ``sample`` articles (a fixed sample:
    the same ids night after night) in the new build and in the snapshot it replaces.
    Relative limits compare the two; absolute ones (off by default) also apply to a
    first build.

    max_coverage_drop: coverage (boxes filled to k without fallback) may fall this much.
    max_duplicate_rise: duplicate-story rate (boxes showing one story twice, or the
        article itself again) may rise this much.
    max_hub_rise: hub share (share of box slots taken by the most recommended 1% of
        articles) may rise this much.
    max_churn: at most this share of boxes (of articles in both builds) may change.
        A night of news changes some boxes; a swapped model or broken text changes most.
    max_removed_share: at most this share of the previous snapshot's articles may be
        missing from the new one: a truncated export or a wrong query looks like this.
    max_unreadable_share: at most this share of the rows read may be unreadable (broken
        quoting, JSON or encoding, oversized rows): an export damaged in transit looks
        like this. Applies to a first build too. Rows that are readable but invalid (no
        text, a bad date) are skipped without counting here.
    duplicate_similarity: cosine from which the gate calls two articles the same story
        (besides equal text or headline). The gate's own rule, so that a ranking setting
        that lets copies through is caught rather than trusted.
    """

    k: int = 2
    sample: int = 2000
    min_coverage: float | None = None
    max_duplicate_rate: float | None = None
    max_hub_share: float | None = None
    max_coverage_drop: float | None = 0.05
    max_duplicate_rise: float | None = 0.02
    max_hub_rise: float | None = 0.05
    max_churn: float | None = 0.5
    max_removed_share: float | None = 0.2
    max_unreadable_share: float | None = 0.2
    duplicate_similarity: float | None = 0.92

    def __post_init__(self) -> None:
        for name in ("k", "sample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"gate {name}={value!r} is invalid: expected a positive integer")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("k", "sample") or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ConfigError(f"gate {f.name}={value!r} is invalid: expected a share in [0, 1] or none")

    @classmethod
    def from_overrides(cls, items: Iterable[str], base: "GateLimits | None" = None) -> "GateLimits":
        """``["max_churn=0.8", "min_coverage=none"]`` (the CLI's --gate) applied to ``base``."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for item in items:
            name, sep, raw = str(item).partition("=")
            name, raw = name.strip().replace("-", "_"), raw.strip()
            if not sep or name not in known:
                raise ConfigError(f"--gate {item!r} is invalid: write NAME=VALUE with NAME one of "
                                  f"{', '.join(known)}")
            try:
                values[name] = None if raw.lower() in ("none", "off") else \
                    int(raw) if name in ("k", "sample") else float(raw)
            except ValueError:
                raise ConfigError(f"--gate {item!r}: {raw!r} is not a number (or 'none')") from None
        return dataclasses.replace(base or cls(), **values)


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    passed: bool
    kind: str  # "max" or "min"

    def __str__(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.name:<15} {self.value:7.3f}  (limit: {self.kind} {self.limit:g})"

    def problem(self) -> str:
        """The failed check in a few words: "churn 0.840 > 0.5"."""
        sign = ">" if self.kind == "max" else "<"
        return f"{self.name} {self.value:.3f} {sign} {self.limit:g}"


@dataclass
class GateReport:
    """The numbers behind a publish decision; saved as gate.json in the snapshot."""

    k: int
    new: dict[str, float]
    previous: dict[str, float] | None
    churn: float | None
    churn_sample: int
    removed_share: float | None
    checks: list[Check]
    notes: list[str] = field(default_factory=list)
    forced: bool = False
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    # The sample's boxes (id -> item ids): saved beside gate.json so that the next build
    # measures its churn against them instead of recomputing this snapshot's boxes.
    boxes: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["boxes"]
        data["passed"] = self.passed
        return data

    def lines(self) -> list[str]:
        def fmt(m: dict | None) -> str:
            if not m:
                return "-"
            return (f"coverage {m['coverage']:.3f}, duplicate rate {m['duplicate_rate']:.3f}, "
                    f"hub share {m['hub_share']:.3f} ({m['boxes']} boxes)")
        out = [f"new       {fmt(self.new)}", f"previous  {fmt(self.previous)}"]
        if self.churn is not None:
            out.append(f"churn     {self.churn:.3f} of {self.churn_sample} boxes changed")
        out += [str(c) for c in self.checks] + [f"note: {n}" for n in self.notes]
        return out


def stable_sample(ids: Iterable[str], n: int) -> list[str]:
    """The same ids every night (by a hash of the id), so churn compares like with like."""
    return heapq.nsmallest(n, ids, key=lambda i: hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest())


class GateSample:
    """Boxes of one serving state for the gate, each computed once, ranked in blocks
    by the one ranking path."""

    def __init__(self, state: ServingState, settings: RankingConfig, k: int, now: datetime,
                 threshold: float | None):
        self.state, self.settings, self.k, self.now, self.threshold = state, settings, k, now, threshold
        self._boxes: dict[str, list[str]] = {}
        self._fallbacks: dict[str, int] = {}

    def boxes(self, ids: Sequence[str], bar) -> list[list[str]]:
        """The item ids of the boxes of ``ids``, in order."""
        missing = list(dict.fromkeys(i for i in ids if i not in self._boxes))
        request = Request(self.k, self.settings, self.now.timestamp(), np.empty(0, np.int64), None)
        for start in range(0, len(missing), 256):
            part = missing[start:start + 256]
            positions = self.state.table.require(part)
            ranked = rank_block(self.state, indexed_sources(self.state, positions), request)
            for article_id, row, kinds in zip(part, ranked.positions.tolist(), ranked.kinds.tolist()):
                shown = [p for p in row if p >= 0]
                self._boxes[article_id] = self.state.table.ids[shown].tolist() if shown else []
                self._fallbacks[article_id] = sum(1 for p, kind in zip(row, kinds) if p >= 0 and kind)
            bar.update(len(part))
        return [self._boxes[i] for i in ids]

    def metrics(self, ids: Sequence[str], bar) -> dict[str, float]:
        """Coverage, duplicate-story rate and hub share of the boxes of ``ids``."""
        boxes = dict(zip(ids, self.boxes(ids, bar)))
        slots: dict[str, int] = {}
        for items in boxes.values():
            for item in items:
                slots[item] = slots.get(item, 0) + 1
        total = sum(slots.values())
        # 1% of the sample (not of the corpus): with a 2,000-box sample of a 1M archive,
        # 1% of the corpus outnumbers the slots.
        top = max(1, math.ceil(0.01 * len(ids)))
        full = [len(items) - self._fallbacks[i] >= self.k for i, items in boxes.items()]
        doubled = [any(self.same_story(a, b) for i, a in enumerate([source, *items])
                       for b in [source, *items][max(i + 1, 1):]) for source, items in boxes.items()]
        return {"coverage": float(np.mean(full)) if full else float("nan"),
                "duplicate_rate": float(np.mean(doubled)) if doubled else float("nan"),
                "hub_share": sum(heapq.nlargest(top, slots.values())) / total if total else 0.0,
                "boxes": len(ids), "articles": int(self.state.table.alive.sum())}

    def same_story(self, a: str, b: str) -> bool:
        """Same text, same headline or near-identical vectors: the gate's own rule, so
        that a ranking setting that lets copies through is caught rather than trusted."""
        table = self.state.table
        pa, pb = table.positions.get(a), table.positions.get(b)
        if table.content_hashes[pa] == table.content_hashes[pb]:
            return True
        if table.title_keys[pa] and table.title_keys[pa] == table.title_keys[pb]:
            return True
        if self.threshold is None:
            return False
        va, vb = self.state.index.vectors(np.array([pa, pb]))
        return float(va @ vb) >= self.threshold


def _gate_params(limits: GateLimits) -> dict[str, Any]:
    return {"version": GATE_VERSION, "k": limits.k, "sample": limits.sample,
            "duplicate_similarity": limits.duplicate_similarity}


@dataclass
class _Previous:
    """The snapshot a build replaces, as the gate sees it: the numbers and boxes its own
    gate stored when it was published (cheap), or, failing those, its boxes recomputed."""

    path: Path
    ids: list[str]
    hashes: dict[str, str]
    model_id: str | None
    stored_metrics: dict[str, float] | None = None
    stored_boxes: dict[str, list[str]] | None = None
    live: GateSample | None = None

    def metrics(self, sample: int, bar) -> dict[str, float]:
        if self.stored_metrics is not None:
            return self.stored_metrics
        return self.live.metrics(self.sample_ids(sample), bar)

    def sample_ids(self, sample: int) -> list[str]:
        return list(self.stored_boxes) if self.stored_boxes is not None else stable_sample(self.ids, sample)

    def box_ids(self, article_id: str, bar) -> set[str]:
        if self.stored_boxes is not None:
            return set(self.stored_boxes[article_id])
        return set(self.live.boxes([article_id], bar)[0])


def evaluate_gate(new: GateSample, previous: "_Previous | None", limits: GateLimits, *, removed: int,
                  unreadable_share: float | None = None, bar=None, notes: Sequence[str] = ()) -> GateReport:
    """Measure the new build against the limits and the snapshot it replaces."""
    bar = bar or NullBar()
    started = time.perf_counter()
    sample = stable_sample(new.state.table.ids[new.state.table.live_positions()].tolist(), limits.sample)
    new_metrics = new.metrics(sample, bar)
    prev_metrics = churn = removed_share = None
    churn_sample = 0
    if previous is not None:
        prev_metrics = previous.metrics(limits.sample, bar)
        both = [i for i in previous.sample_ids(limits.sample) if new.state.table.position_of(i) is not None]
        changed = sum(set(box) != previous.box_ids(article_id, bar)
                      for article_id, box in zip(both, new.boxes(both, bar)))
        churn, churn_sample = (changed / len(both) if both else 0.0), len(both)
        removed_share = removed / max(len(previous.ids), 1)
    checks: list[Check] = []

    def check(name: str, value: float | None, limit: float | None, kind: str) -> None:
        if value is None or limit is None:
            return
        ok = value <= limit + 1e-12 if kind == "max" else value >= limit - 1e-12
        checks.append(Check(name, round(float(value), 6), limit, bool(ok), kind))

    check("coverage", new_metrics["coverage"], limits.min_coverage, "min")
    check("duplicate rate", new_metrics["duplicate_rate"], limits.max_duplicate_rate, "max")
    check("hub share", new_metrics["hub_share"], limits.max_hub_share, "max")
    check("unreadable rows", unreadable_share, limits.max_unreadable_share, "max")
    if prev_metrics is not None:
        check("coverage drop", prev_metrics["coverage"] - new_metrics["coverage"], limits.max_coverage_drop, "max")
        check("duplicate rise", new_metrics["duplicate_rate"] - prev_metrics["duplicate_rate"],
              limits.max_duplicate_rise, "max")
        check("hub rise", new_metrics["hub_share"] - prev_metrics["hub_share"], limits.max_hub_rise, "max")
        check("churn", churn, limits.max_churn, "max")
        check("removed", removed_share, limits.max_removed_share, "max")
    report = GateReport(k=limits.k, new=new_metrics, previous=prev_metrics, churn=churn,
                        churn_sample=churn_sample, removed_share=removed_share, checks=checks,
                        notes=list(notes), seconds=round(time.perf_counter() - started, 3))
    report.params = _gate_params(limits)
    report.boxes = dict(zip(sample, new.boxes(sample, bar)))
    return report




def open_previous(root: Path, gate: GateLimits, now: datetime, *, notes: list[str]) -> _Previous | None:
    """The snapshot now serving. Missing: a first build. Unreadable: say so and let the
    new build replace it. Its stored gate boxes are used when measured the same way;
    otherwise it is opened as its servers rank (its own saved config) and measured."""
    folder, serving = latest_snapshot_dir(root)
    if folder is None:
        return None
    if not serving:  # a lost link must not turn a truncated export into a "first build"
        notes.append(f"{root / CURRENT} is missing or dangling: compared with the newest kept "
                     f"snapshot {folder.name}")
    try:
        snapshot = read_artifacts(folder, verify=False)
        metadata = snapshot.artifacts.metadata
        ids = list(metadata["ids"])
        previous = _Previous(folder, ids, dict(zip(ids, metadata["content_hashes"])),
                             snapshot.manifest.get("model_id"))
        stored = stored_gate(folder, gate)
        if stored is not None:
            previous.stored_metrics, previous.stored_boxes = stored
            return previous
        # Ranked as its servers rank it (its own saved settings); no model is needed.
        config = Config.from_dict(snapshot.manifest.get("config") or {})
        state = ServingState.from_snapshot(snapshot, config, snapshot.manifest.get("model_id"))
    except (SimilarArticlesError, OSError, ValueError, KeyError) as exc:
        notes.append(f"the current snapshot {folder.name} is unreadable ({exc}); relative checks skipped")
        return None
    previous.live = GateSample(state, config.ranking, gate.k, now, gate.duplicate_similarity)
    return previous


def stored_gate(folder: Path, gate: GateLimits) -> tuple[dict, dict] | None:
    """(metrics, boxes) the snapshot's own gate saved, if measured with these settings."""
    try:
        report = json.loads((folder / GATE_FILE).read_text(encoding="utf-8"))
        if report.get("params") != _gate_params(gate):
            return None
        boxes = json.loads((folder / GATE_BOXES_FILE).read_text(encoding="utf-8"))
        return report["new"], boxes
    except (OSError, ValueError, KeyError):
        return None
