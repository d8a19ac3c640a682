"""The snapshot schema: which arrays a snapshot holds, their dtypes, shapes and whether
they are memory-mapped; one writer (:func:`write_artifacts`) and one validator
(:func:`read_artifacts`). Every build writes through here and every load reads
through here, so a name or a dtype cannot drift between the two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import IndexCorruptedError
from .features.copies import SLOTS
from .features.lexical import N_FEATURES, TERMS
from .snapshot import INDEX_FILE, read_snapshot, write_snapshot
from .table import COLUMNS, OPTIONAL_COLUMNS


@dataclass(frozen=True)
class ArraySpec:
    """One .npy file: its dtype, its shape after the article axis (``"width"``: the
    neighbour lists' width, ``"bytes"``: their copy bits' bytes), whether it is required,
    whether it has one row per article, and whether a load memory-maps it (read only by
    calls that rank unseen articles or articles added since the build: it costs
    resident memory only as far as they touch it)."""

    dtype: str
    shape: tuple = ()
    required: bool = False
    per_article: bool = True
    mapped: bool = False


SCHEMA: dict[str, ArraySpec] = {
    "published": ArraySpec("float64", required=True),
    "title_keys": ArraySpec("int64", required=True),
    "lexical_idf": ArraySpec("float16", (N_FEATURES,), per_article=False),
    "term_ids": ArraySpec("int32", (TERMS,), mapped=True),
    "term_weights": ArraySpec("float16", (TERMS,), mapped=True),
    "copy_sketches": ArraySpec("uint32", (SLOTS,)),
    "copy_shingles": ArraySpec("int32"),
    "neighbour_lists": ArraySpec("int32", ("width",)),
    "neighbour_overlap": ArraySpec("float16", ("width",)),  # term overlap of each listed pair
    "neighbour_copies": ArraySpec("uint8", ("bytes",)),  # copy bits of each listed pair, packed
    "neighbour_beyond": ArraySpec("float16"),  # no unlisted article has a higher cosine (fused lists)
    # The lexical retriever's postings (features/retrieval.py), read by unseen articles' calls.
    "lexical_offsets": ArraySpec("int64", (N_FEATURES + 1,), per_article=False, mapped=True),
    "lexical_docs": ArraySpec("int32", ("postings",), per_article=False, mapped=True),
    "lexical_weights": ArraySpec("float16", ("postings",), per_article=False, mapped=True),
    # Newsroom fields (table.NEWSROOM), written only when some article has a value.
    "embargo_until": ArraySpec("float64"),
    "expires_at": ArraySpec("float64"),
    "do_not_recommend": ArraySpec("bool"),
}
# Arrays that come in groups: a snapshot holds all of a group or none.
GROUPS = (("lexical_idf", "term_ids", "term_weights"), ("copy_sketches", "copy_shingles"),
          ("lexical_offsets", "lexical_docs", "lexical_weights"))


@dataclass(frozen=True)
class Artifacts:
    """Everything a snapshot holds besides the FAISS index, as a build makes it and a
    load reads it. ``metadata``: articles.json's columns (table.COLUMNS)."""

    metadata: dict[str, list]
    published: np.ndarray
    title_keys: np.ndarray
    lexical_idf: np.ndarray | None = None
    term_ids: np.ndarray | None = None
    term_weights: np.ndarray | None = None
    copy_sketches: np.ndarray | None = None
    copy_shingles: np.ndarray | None = None
    neighbour_lists: np.ndarray | None = None
    neighbour_overlap: np.ndarray | None = None
    neighbour_copies: np.ndarray | None = None
    neighbour_beyond: np.ndarray | None = None
    lexical_offsets: np.ndarray | None = None
    lexical_docs: np.ndarray | None = None
    lexical_weights: np.ndarray | None = None
    embargo_until: np.ndarray | None = None
    expires_at: np.ndarray | None = None
    do_not_recommend: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in SCHEMA and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class LoadedSnapshot:
    path: Path
    manifest: dict[str, Any]
    artifacts: Artifacts

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE


def write_artifacts(root: str | os.PathLike, *, write_index: Callable[[Path], None], artifacts: Artifacts,
                    manifest: dict[str, Any], keep: int = 3, extra_files: dict | None = None,
                    publish: bool = True) -> Path:
    """Check ``artifacts`` against the schema and write them as a new snapshot under
    ``root`` (published, or staged when ``publish`` is False). Returns its folder."""
    validate(artifacts, len(artifacts.published), where="the build")
    return write_snapshot(root, write_index=write_index, metadata=artifacts.metadata, arrays=artifacts.arrays(),
                          manifest=manifest, keep=keep, extra_files=extra_files, publish=publish)


def read_artifacts(path: str | os.PathLike, *, verify: bool = True) -> LoadedSnapshot:
    """The snapshot ``path`` serves, checksum-verified and checked against the schema."""
    snapshot = read_snapshot(path, verify=verify, mapped={name for name, spec in SCHEMA.items() if spec.mapped})
    unknown = sorted(set(snapshot.arrays) - set(SCHEMA))
    if unknown:
        raise IndexCorruptedError(f"{snapshot.path} holds arrays this library does not know ({unknown}); "
                                  "rebuild the index with this version (`similar-articles build`)")
    missing = [name for name in COLUMNS if name not in snapshot.metadata]
    if missing:
        raise IndexCorruptedError(f"{snapshot.path}: articles.json lacks {missing}; rebuild the index")
    count = snapshot.manifest.get("count")
    artifacts = Artifacts(metadata=snapshot.metadata, **{name: snapshot.arrays.get(name) for name in SCHEMA})
    validate(artifacts, count, where=str(snapshot.path))
    return LoadedSnapshot(snapshot.path, snapshot.manifest, artifacts)


def validate(artifacts: Artifacts, count: int | None, *, where: str) -> None:
    """Raise IndexCorruptedError naming the first array whose presence, dtype or shape
    breaks the schema for ``count`` articles."""
    def fail(problem: str) -> None:
        raise IndexCorruptedError(f"{where}: {problem}; rebuild the index (`similar-articles build`)")

    if not isinstance(count, int):
        fail(f"the manifest's article count is {count!r}")
    for name in COLUMNS + OPTIONAL_COLUMNS:
        if name in artifacts.metadata and len(artifacts.metadata[name]) != count:
            fail(f"articles.json's {name} has {len(artifacts.metadata[name])} rows, not {count}")
    present = artifacts.arrays()
    for group in GROUPS:
        if 0 < sum(name in present for name in group) < len(group):
            fail(f"the arrays {group} come together, but only {[n for n in group if n in present]} are there")
    lists = present.get("neighbour_lists")
    sizes = {"width": 0 if lists is None else lists.shape[1]}
    sizes["bytes"] = (sizes["width"] + 7) // 8
    docs = present.get("lexical_docs")
    sizes["postings"] = 0 if docs is None else len(docs)
    for name, spec in SCHEMA.items():
        array = present.get(name)
        if array is None:
            if spec.required:
                fail(f"{name} is missing")
            continue
        if name.startswith("neighbour_") and lists is None:
            fail(f"{name} is there without neighbour_lists")
        shape = tuple(sizes.get(d, d) for d in spec.shape)
        expected = ((count,) if spec.per_article else ()) + shape
        if array.dtype != np.dtype(spec.dtype) or array.shape != expected:
            fail(f"{name} is {array.dtype} {array.shape}, the schema says {spec.dtype} {expected}")
