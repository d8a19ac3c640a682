"""The sentence-transformers encoder: article text -> unit vectors on the CPU, by torch
or by an ONNX export of the same model, with long-text handling."""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np

from ..articles import Article
from ..config import DEFAULT_MODEL, EncoderConfig
from ..errors import ConfigError
from .onnx import OnnxRunner
from .vectors import PACKAGED_MODELS, normalise, resolve_model_path

# Words per extra window in "chunks" mode: about 200 word pieces of news English,
# leaving room for the title that each window repeats as context.
_CHUNK_WORDS = 150


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
        return normalise(pooled)

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

