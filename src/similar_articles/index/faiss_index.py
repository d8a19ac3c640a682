"""FAISS implementations of the vector index, chosen by size and store.

Kinds (the manifest records one): ``flat`` (exact), ``hnsw`` (graph, approximate),
``ivf`` (inverted lists, approximate, cheapest build), each with float32 rows or, with
``store="fp16"``, half-precision rows (``hnsw-fp16``...: half the memory for a cosine
error under 1e-4), or with ``store="sq8"`` rows quantised to 8 bits per dimension
(``flat-sq8``, ``hnsw-sq8``, ``ivf-sq8``): a quarter of the memory for a cosine error
of about 0.002.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import faiss
import numpy as np

from ..config import IndexConfig
from ..parallel import thread_budget
from ..errors import ConfigError, IndexCorruptedError
from .base import gathered_rows

_CORES = thread_budget()  # OMP_NUM_THREADS if set (a Ray task's CPUs), else every core


def _one_core_after_fork() -> None:
    """GNU OpenMP cannot start a team of threads in a process forked after this one
    used a team: the child waits forever on threads it does not have (a forked child
    of a loaded recommender hung in recommend_many). A forked child (a gunicorn
    --preload worker, an export or build worker) therefore runs FAISS on one thread."""
    global _CORES
    _CORES = 1
    faiss.omp_set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_one_core_after_fork)

BASE_KINDS = ("flat", "hnsw", "ivf")
# FAISS scalar quantisers of the stores that are not float32 (config.INDEX_STORES)
_QUANTISERS = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}
KINDS = BASE_KINDS + tuple(f"{k}-{store}" for store in _QUANTISERS for k in BASE_KINDS)


def _single_thread() -> None:
    """One query is fastest on one thread: OpenMP start-up costs more than it saves
    (two threads measured 3x slower), and switching the pool size on every call costs
    too. So single queries leave FAISS on one thread; bulk work borrows every core."""
    if faiss.omp_get_max_threads() != 1:
        faiss.omp_set_num_threads(1)


class _OneCore:
    """FAISS on one thread inside the block (single queries: see _single_thread)."""

    def __enter__(self):
        _single_thread()

    def __exit__(self, *exc):
        pass


class _AllCores:
    def __enter__(self):
        faiss.omp_set_num_threads(_CORES)

    def __exit__(self, *exc):
        faiss.omp_set_num_threads(1)


def ivf_lists(n_vectors: int, config: IndexConfig) -> int:
    """Inverted lists for ``n_vectors``: the config's, else about 4 * sqrt(n), and never
    so many that a list gets fewer than 39 training vectors (FAISS's minimum)."""
    wanted = config.ivf_nlist or int(4 * math.sqrt(max(n_vectors, 1)))
    return max(1, min(wanted, n_vectors // 39))


class FaissIndex:
    """A FAISS index over unit vectors with inner product (= cosine)."""

    def __init__(self, index: faiss.Index | None, kind: str, dim: int, config: IndexConfig):
        self._index = index  # None until the first add() for kinds that train (IVF, SQ8)
        self.kind = kind
        self.dim = dim
        self._config = config
        self._rows: np.ndarray | None = None  # zero-copy view of the stored rows (floats or codes)
        self._rows_n = -1
        self._quantiser: faiss.ScalarQuantizer | None = None  # widens codes; None for float32 rows

    @property
    def config(self) -> IndexConfig:
        return self._config

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, kind: str, dim: int, config: IndexConfig) -> "FaissIndex":
        if kind not in KINDS:
            raise ConfigError(f"index kind {kind!r} is unknown; use one of {KINDS}")
        index = None
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            _tune_hnsw(index, config)
        return cls(index, kind, dim, config)

    def _create_trained(self, sample: np.ndarray) -> faiss.Index:
        """IVF and quantised kinds learn from the first batch of vectors they are given
        (an 8-bit store its value ranges; half precision needs no training)."""
        dim, config = self.dim, self._config
        base, _, store = self.kind.partition("-")
        quantised = bool(store)
        qtype = _QUANTISERS.get(store)
        if base == "flat":
            index = faiss.IndexScalarQuantizer(dim, qtype, faiss.METRIC_INNER_PRODUCT)
        elif base == "hnsw":
            index = faiss.IndexHNSWSQ(dim, qtype, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            _tune_hnsw(index, config)
        else:
            nlist = ivf_lists(len(sample), config)
            quantizer = faiss.IndexFlatIP(dim)
            index = (faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, qtype, faiss.METRIC_INNER_PRODUCT)
                     if quantised else faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT))
            index.nprobe = config.ivf_nprobe
        with _AllCores():
            index.train(sample)
        if base == "ivf":
            index.make_direct_map()  # positions -> rows, for vectors()
        return index

    @classmethod
    def load(cls, path: Path, kind: str, config: IndexConfig) -> "FaissIndex":
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexCorruptedError(f"{path}: FAISS could not read the index ({exc}); rebuild it") from None
        return cls._read(index, kind, config)

    @classmethod
    def _read(cls, index: faiss.Index, kind: str, config: IndexConfig) -> "FaissIndex":
        """An index FAISS read back, with the search settings the file does not keep."""
        base = kind.split("-")[0]
        if base == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = config.ef_search
        elif base == "ivf":
            # read_index already returns the IVF class; a downcast_index() wrapper would
            # not own the object, which would be freed with the original wrapper.
            faiss.extract_index_ivf(index).nprobe = config.ivf_nprobe
            index.make_direct_map()
        return cls(index, kind, index.d, config)

    def to_bytes(self) -> np.ndarray:
        """The index as FAISS writes it, in a uint8 array: how a build ships it to Ray
        tasks through the object store (numpy arrays are read there without a copy)."""
        if self._index is None:
            raise ConfigError("cannot serialise an empty index: add vectors first")
        return faiss.serialize_index(self._index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, kind: str, config: IndexConfig) -> "FaissIndex":
        """The index :meth:`to_bytes` wrote (a copy: FAISS owns its memory)."""
        return cls._read(faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8)), kind, config)

    # ------------------------------------------------------------------ contract
    def __len__(self) -> int:
        return 0 if self._index is None else self._index.ntotal

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(vectors):
            return
        if self._index is None:
            self._index = self._create_trained(vectors)
        with _AllCores():
            self._index.add(vectors)

    def search(self, query: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """search_many for one query: (similarities, positions), best first."""
        sims, positions = self.search_many(np.asarray(query, dtype=np.float32).reshape(1, -1), n)
        return sims[0], positions[0]

    def search_many(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self._index is None:
            return (np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64))
        # One query is fastest on one thread (OpenMP start-up costs more than it saves).
        with _AllCores() if len(queries) > 1 else _OneCore():
            return self._index.search(queries, min(n, self._index.ntotal))

    @contextlib.contextmanager
    def wide_search(self, ef: int):
        """Searches inside the block use an HNSW beam of at least ``ef`` (build-time
        bulk searches can afford more recall than a live call)."""
        hnsw = faiss.downcast_index(self._index).hnsw \
            if self._index is not None and self.kind.startswith("hnsw") else None
        if hnsw is None or hnsw.efSearch >= ef:
            yield
            return
        before, hnsw.efSearch = hnsw.efSearch, ef
        try:
            yield
        finally:
            hnsw.efSearch = before

    def vectors(self, positions: np.ndarray, *, all_cores: bool = False) -> np.ndarray:
        """Rows at ``positions`` as float32. Flat and HNSW stores are read through a view
        of FAISS's own buffer (no copy of the matrix, no SWIG call per row); IVF stores
        decode row by row. ``all_cores``: widen a large read of half-precision or 8-bit
        rows on every core."""
        positions = np.asarray(positions, dtype=np.int64)
        rows = self._stored_rows()
        if rows is not None:
            picked = np.take(rows, positions, axis=0)  # ~2x faster than rows[positions] for many rows
            return picked if self._quantiser is None else self._widened(picked, all_cores)
        if self._index is None or not len(positions):
            return np.zeros((len(positions), self.dim), np.float32)
        return self._index.reconstruct_batch(positions)

    def _widened(self, codes: np.ndarray, all_cores: bool) -> np.ndarray:
        """float32 rows from gathered codes. FAISS's decoder widens half precision ~1.5x
        faster than numpy's cast from 20 rows on (a 256 x 50 block of candidates at 1M:
        ~5.7 against ~8.7 ms on one core, most of a block ranked in full) and gives the
        same bits (IEEE conversion: every one of the 65,536 halves checked); numpy's
        cast is faster for a few rows. 8-bit codes go through the decoder FAISS's
        reconstruct_batch calls, without its call per row: the same bits, ~2.7x faster
        for 50 rows and ~6x for 12,800 (one core, 200k rows)."""
        if self.kind.endswith("fp16") and len(codes) < 20:
            return codes.view(np.float16).astype(np.float32)
        with _AllCores() if all_cores else _OneCore():  # decoding is an OpenMP loop
            return self._quantiser.decode(codes)

    def inner_products(self, queries: np.ndarray, positions: np.ndarray, *, all_cores: bool = False) -> np.ndarray:
        """``queries[b] . row(positions[b, w])`` as a (B, W) array, -inf where a position
        is negative. float32 stores compute in place from FAISS's buffer: no copy of the
        rows is made, which is most of the cost of gathering them (a 256 x 50 block on
        one core: ~6 ms against ~12 for a gather and a product); other stores gather and
        widen the rows first (read_rows). Every pair is summed the same way whatever the
        batch, so one box and a batch of boxes agree to the bit.
        ``all_cores``: split the queries over every core (the reads wait on memory and
        each core waits on its own: a 256 x 50 block took ~3 ms on two cores)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        positions = _per_query(np.asarray(positions, dtype=np.int64), len(queries))
        return self.products_at(queries, *self.read_rows(positions, all_cores=all_cores), all_cores=all_cores)

    def read_rows(self, positions: np.ndarray, *, all_cores: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The rows at ``positions`` read once, for several products_at against them (a
        block's pool: its cosines to the sources, then to each pick): float32 ``rows``
        and ``where``, each position's row in them (-1 where a position is negative).
        float32 stores give their buffer and the positions themselves; other stores a
        widened copy of just those rows."""
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        if positions.size and positions.max() >= len(self):  # FAISS reads wherever it is told to
            raise IndexError(f"position {int(positions.max())} is past the index's {len(self)} rows")
        rows = self._float_rows()
        if rows is not None:
            return rows, positions
        return gathered_rows(self, positions, all_cores=all_cores)

    def products_at(self, queries: np.ndarray, rows: np.ndarray, where: np.ndarray, *,
                    all_cores: bool = False) -> np.ndarray:
        """``queries[b] . rows[where[b, w]]`` as a (B, W) array, -inf where ``where`` is
        negative: inner_products over rows from read_rows (the same kernel, the same
        bits)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        where = _per_query(np.ascontiguousarray(where, dtype=np.int64), len(queries))
        out = np.empty(where.shape, np.float32)
        if not where.size:
            return out
        with _AllCores() if all_cores else _OneCore():
            faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(queries), faiss.swig_ptr(rows),
                                             faiss.swig_ptr(where), self.dim, len(queries), where.shape[1])
        return out

    def _float_rows(self) -> np.ndarray | None:
        """A view of the stored float32 rows; None for other stores."""
        rows = self._stored_rows()
        return rows if rows is not None and self._quantiser is None else None

    def _stored_rows(self) -> np.ndarray | None:
        """A zero-copy view of the stored rows: float32 (n, dim), or the codes of a
        half-precision or 8-bit store as uint8 (n, code size), widened by
        ``self._quantiser``; None for IVF stores and before the first add."""
        if self._index is None or self.kind.startswith("ivf"):
            return None
        n = self._index.ntotal
        if self._rows_n != n:  # an add() may have moved FAISS's buffer
            storage = self._index if self.kind.startswith("flat") else faiss.downcast_index(self._index.storage)
            if self.kind in ("flat", "hnsw"):
                pointer, width, dtype = storage.get_xb(), self.dim, np.float32
            else:
                storage = faiss.downcast_index(storage)
                pointer, width, dtype = storage.codes.data(), storage.code_size, np.uint8
                self._quantiser = storage.sq
            self._rows = faiss.rev_swig_ptr(pointer, n * width).reshape(n, width) if n else np.zeros((0, width), dtype)
            self._rows_n = n
        return self._rows

    def save(self, path: Path) -> None:
        if self._index is None:
            raise ConfigError("cannot save an empty index: add vectors first")
        faiss.write_index(self._index, str(path))

    def memory_bytes(self) -> int:
        """Bytes FAISS holds for the vectors and the search structure (not metadata)."""
        if self._index is None:
            return 0
        return int(faiss.serialize_index(self._index).nbytes)


def exact_search(queries: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``n`` of ``rows`` by inner product for each query, (similarities,
    positions), on every core: FAISS's blocked matrix product, without an index."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    with _AllCores():
        return faiss.knn(queries, rows, min(n, len(rows)), faiss.METRIC_INNER_PRODUCT)


def _tune_hnsw(index, config: IndexConfig) -> None:
    index.hnsw.efConstruction = config.ef_construction
    index.hnsw.efSearch = config.ef_search


def create_index(dim: int, n_articles: int, config: IndexConfig) -> FaissIndex:
    """The index kind the config asks for, resolving "auto" by corpus size."""
    return FaissIndex.create(config.resolve_kind(n_articles), dim, config)


def _per_query(positions: np.ndarray, n_queries: int) -> np.ndarray:
    """``positions`` as a row per query. No queries give no rows, as wide as given
    (reshape(0, -1) cannot tell the width and raises)."""
    if n_queries == 0:
        return positions.reshape(0, positions.shape[-1] if positions.ndim == 2 else 0)
    return positions.reshape(n_queries, -1)
