"""The build's heavy work on a Ray cluster: ``similar-articles build --engine ray``.

- Reading: Parquet and JSONL shards are read by Ray Data (``read_parquet``;
  ``read_binary_files`` split into lines in Ray tasks), in order; the driver turns
  each line into a row with the local reader's own code (:func:`jsonl_row`), so row
  numbers and skipped rows are the local engine's. CSV and SQL go through today's
  readers on the driver. A shard Ray Data cannot read is read again on the driver,
  which reports its bad rows one by one.
- Encoding: the driver looks every chunk up in the embedding cache (the SQLite file
  stays on the driver) and puts only the texts it lacks into the object store. When
  the sources are read, Ray Data encodes them in ``map_batches`` over a pool of
  actors, each loading the configured encoder once; the driver commits each batch of
  vectors to the cache as it comes back, so a failed build loses only the batches in
  flight. Ray Data restarts a killed actor and runs its batch again.
- Candidate lists: the index (FAISS bytes) and the fingerprints go into the object
  store once; Ray tasks compute :func:`candidate_block` over blocks of articles.

The driver then assembles, gates, writes and publishes exactly as the local build.
"""

from __future__ import annotations

import logging
import uuid
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from ..articles import Article
from ..embedding import EmbeddingCache, Encoder, SentenceTransformerEncoder, plan_embedding
from ..errors import ConfigError, SimilarArticlesError
from ..index.neighbours import BLOCK
from ..sources import FileSource, Row, Source, jsonl_row
from .candidates import CandidateInputs, FusedLists, candidate_block, join_blocks

log = logging.getLogger("similar_articles")

# Articles an actor encodes per call (~2-3 s on one core), shipped as one block of the
# object store each: Ray Data hands a block to one actor, so blocks this small spread a
# chunk over every actor, and a killed actor costs at most one batch. Over ~100 KB, so
# the blocks live in the object store (which spills to disk), not in the driver's heap.
BATCH_ROWS = 64
TASK_RETRIES = 3  # a candidate-list task whose worker dies is run again (Ray's default)
_WORKER_INPUTS: dict = {}  # in a Ray worker: the candidate inputs of the build it serves


class Deferred(NamedTuple):
    """A chunk whose missing vectors are being encoded on the cluster."""

    hashes: list[str]
    cached: dict[str, np.ndarray]


class RayEngine:
    """Reads file shards with Ray Data, encodes on a pool of Ray actors and computes the
    candidate lists in Ray tasks (see the module's docstring).

    address: a running cluster (``ray://head:10001``, ``auto``); None joins the cluster
        this process is already connected to, or starts a local one.
    actors: encoding actors, one CPU each (default: every CPU of the cluster).
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, actors: int | None = None, batch_rows: int = BATCH_ROWS):
        if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
            raise ConfigError(f"ray_actors={actors!r} is invalid: give a positive number of encoding actors")
        self.address, self.actors, self.batch_rows = address, actors, batch_rows
        self._ray = None
        self._started = False
        self._queued: set[str] = set()
        self._refs: list = []  # chunks of texts to encode, in the object store
        self._fresh: dict[str, np.ndarray] = {}  # encoded vectors, when there is no cache to hold them
        self._model_id = ""

    # ------------------------------------------------------------------ cluster
    def _connect(self):
        if self._ray is None:
            try:
                import ray
            except ImportError:
                raise ConfigError('the ray engine needs Ray: pip install "similar-articles[ray]"') from None
            if not ray.is_initialized():
                try:
                    ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise SimilarArticlesError(f"cannot reach the Ray cluster at {self.address or 'a new local one'}"
                                               f" ({exc}); nothing was published") from None
                self._started = True
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True  # rows keep the sources' order
            context.enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            self._ray = ray
            self.actors = self._actor_count(ray)
        return self._ray

    def close(self) -> None:
        if self._started and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._started = None, False

    # ------------------------------------------------------------------ reading
    def rows(self, source: Source) -> Iterator[Row]:
        if not isinstance(source, FileSource) or source.format not in ("parquet", "jsonl"):
            yield from source.rows()
            return
        source.check()
        self._connect()  # a cluster that cannot be reached fails the build here, not the read
        last = 0
        try:
            for number, row in source.mapped(self._shard_rows(source)):
                last = number
                yield number, row
        except Exception as exc:  # noqa: BLE001 - Ray raises many types for a file it cannot parse
            log.warning("Ray Data could not read %s after row %d (%s): reading the rest here, row by row",
                        source.path, last, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            for number, row in source.rows():
                if number > last:
                    yield number, row

    def _shard_rows(self, source: FileSource) -> Iterator[Row]:
        ray = self._connect()
        path = str(source.path)
        if source.format == "parquet":
            number = 0
            for batch in ray.data.read_parquet(path).iter_batches(batch_format="pyarrow", batch_size=None):
                for row in batch.to_pylist():
                    number += 1
                    yield number, row
            return
        lines = ray.data.read_binary_files(path).map_batches(_split_lines, batch_format="numpy")
        for batch in lines.iter_batches(batch_format="numpy", batch_size=None):
            for number, raw in zip(batch["number"].tolist(), batch["line"]):
                yield number, jsonl_row(path, number, bytes(raw))

    # ------------------------------------------------------------------ encoding
    def embed(self, articles: Sequence[Article], encoder: Encoder, cache: EmbeddingCache | None) -> tuple[object, int]:
        import pyarrow as pa

        plan = plan_embedding(articles, encoder, cache)
        self._model_id = encoder.model_id
        ship = [i for i in plan.to_encode if plan.hashes[i] not in self._queued]
        self._queued.update(plan.hashes[i] for i in ship)
        for first in range(0, len(ship), self.batch_rows):
            part = ship[first:first + self.batch_rows]
            self._refs.append(self._connect().put(pa.table({
                "hash": [plan.hashes[i] for i in part], "id": [articles[i].id for i in part],
                "title": [articles[i].title for i in part], "body": [articles[i].body for i in part]})))
        return Deferred(plan.hashes, plan.cached), len(ship)

    def finish(self, encoder: Encoder, cache: EmbeddingCache | None, bar) -> None:
        """Encode every text queued by :meth:`embed` on the actor pool; each batch that
        comes back is committed to the cache."""
        if not self._refs:
            return
        config = getattr(encoder, "config", None)
        if not isinstance(encoder, SentenceTransformerEncoder):
            raise ConfigError("the ray engine loads the configured encoder in each actor: pass an EncoderConfig "
                              "(Config.encoder), not an encoder object, or use the local engine")
        ray = self._connect()
        actors = self.actors
        log.info("encoding %d articles on %d Ray actors", len(self._queued), actors)
        dataset = ray.data.from_arrow_refs(self._refs).map_batches(
            _encoder_class(config), compute=ray.data.ActorPoolStrategy(size=actors), batch_size=None,
            batch_format="numpy", num_cpus=1)
        try:
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                hashes, vectors = [str(h) for h in batch["hash"]], np.asarray(batch["vector"], np.float32)
                if cache is not None:
                    cache.put_many(encoder.model_id, hashes, vectors)
                else:
                    self._fresh.update(zip(hashes, vectors))
                bar.update(len(hashes))
        except Exception as exc:  # noqa: BLE001 - Ray wraps what the actors raised
            raise SimilarArticlesError(f"encoding on Ray failed ({str(exc).splitlines()[0]}); the vectors "
                                       "already encoded are cached, nothing was published") from exc
        finally:
            self._refs.clear()

    def _actor_count(self, ray) -> int:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if self.actors is not None and self.actors > cpus:
            raise ConfigError(f"ray_actors={self.actors} is more than the {cpus} CPUs of the Ray cluster: "
                              "each encoding actor takes one CPU")
        return self.actors or max(cpus, 1)

    def vectors(self, chunk: object, cache: EmbeddingCache | None) -> np.ndarray:
        hashes, cached = chunk
        missing = [h for h in dict.fromkeys(hashes) if h not in cached]
        if missing:
            found = {h: self._fresh[h] for h in missing if h in self._fresh}
            if cache is not None and len(found) < len(missing):
                found.update(cache.get_many(self._model_id, [h for h in missing if h not in found]))
            lost = [h for h in missing if h not in found]
            if lost:
                raise SimilarArticlesError(f"{len(lost)} vectors did not come back from the Ray actors; "
                                           "nothing was published")
            cached = {**cached, **found}
        return np.ascontiguousarray(np.vstack([cached[h] for h in hashes]), dtype=np.float32)

    # ------------------------------------------------------------------ candidate lists
    def candidate_lists(self, inputs: CandidateInputs, bar) -> FusedLists:
        ray = self._connect()
        shared, token = ray.put(inputs.shared()), uuid.uuid4().hex
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_candidate_task)
        blocks = {task.remote(shared, token, start, min(start + BLOCK, len(inputs))): start
                  for start in range(0, len(inputs), BLOCK)}
        parts: dict[int, FusedLists] = {}
        waiting = list(blocks)
        try:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                part = ray.get(done[0])
                parts[blocks[done[0]]] = part
                bar.update(len(part.lists))
        except Exception as exc:  # noqa: BLE001 - Ray wraps what the tasks raised
            raise SimilarArticlesError(f"the candidate lists failed on Ray ({str(exc).splitlines()[0]}); "
                                       "nothing was published") from exc
        return join_blocks([parts[start] for start in sorted(parts)])


def _split_lines(batch: dict) -> dict:
    """Ray task: whole JSONL files (``read_binary_files`` rows) -> their non-blank lines
    with their line numbers, split as a binary file iterates (at b"\n" only: a text
    may hold U+2028 or a lone \r, which ``read_text`` would split at)."""
    numbers: list[int] = []
    lines: list[bytes] = []
    for data in batch["bytes"]:
        pieces = bytes(data).split(b"\n")
        for number, piece in enumerate(pieces, start=1):
            raw = piece + b"\n" if number < len(pieces) else piece
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM, as the local reader drops it
            if raw.strip():
                numbers.append(number)
                lines.append(raw)
    return {"number": np.array(numbers, dtype=np.int64), "line": np.array(lines, dtype=object)}


def _encoder_class(config):
    """The actor class of the encoding pool, closed over the encoder's settings (so
    Ray ships them with the class, not as constructor arguments in the object store)."""

    class EncodeArticles:
        """One Ray actor: loads the configured encoder once, then encodes batches."""

        def __init__(self):
            self.encoder = SentenceTransformerEncoder(config)
            self.encoder.dim  # load the model now, not inside the first batch

        def __call__(self, batch: dict) -> dict:
            articles = [Article(id=str(i), title=str(t), body=str(b))
                        for i, t, b in zip(batch["id"], batch["title"], batch["body"])]
            return {"hash": batch["hash"], "vector": self.encoder.encode_articles(articles)}

    return EncodeArticles


def _candidate_task(shared: dict, token: str, start: int, stop: int) -> FusedLists:
    """Ray task: one block of candidate lists. The inputs (FAISS index, lexical
    matrices) are rebuilt once per worker process and build, then reused."""
    if _WORKER_INPUTS.get("token") != token:
        _WORKER_INPUTS.clear()
        _WORKER_INPUTS.update(token=token, inputs=CandidateInputs.from_shared(shared))
    return candidate_block(_WORKER_INPUTS["inputs"], start, stop)
