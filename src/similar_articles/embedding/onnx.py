"""ONNX back-ends of the encoder: the local model exported once to ONNX (fp32 or
int8), run with onnxruntime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import DEFAULT_MODEL, EncoderConfig
from ..errors import ConfigError
from ..parallel import thread_budget
from ..paths import data_dir
from .vectors import PACKAGED_MODELS, normalise, resolve_model_path

def onnx_dir(config: EncoderConfig) -> Path:
    """Where the ONNX exports of ``config.model`` live: ``config.onnx_dir`` or
    ``onnx/<model>`` under the data cache (``$SIMILAR_ARTICLES_DATA``)."""
    if config.onnx_dir:
        return Path(config.onnx_dir).expanduser()
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
        options.intra_op_num_threads = thread_budget()  # one thread in a one-CPU Ray actor
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
        return normalise(out)

