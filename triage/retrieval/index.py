"""`triage index`: knowledge articles and resolved cases -> embeddings -> the vector store.

The Beam shape the seeds describe: chunks, `MLTransform(...).with_transform(embeddings)`, then
`VectorDatabaseWriteTransform(MilvusVectorWriterConfig)`. `TriageEmbeddings` is an
`EmbeddingsManager`, so any model behind `triage.retrieval.embedders` (EmbeddingGemma through
keras-hub in production) runs inside `MLTransform` like Beam's own Hugging Face one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.ml.rag.embeddings.base import create_text_adapter
from apache_beam.ml.transforms.base import EmbeddingsManager, _TextEmbeddingHandler

from triage.retrieval.documents import chunk_document, read_documents
from triage.retrieval.embedders import (
    DEFAULT_EMBEDDER,
    Embedder,
    embedding_width,
    load_embedder,
)
from triage.retrieval.store import DEFAULT_COLLECTION, VectorStore

__all__ = ["TriageEmbeddings", "index_documents", "main"]


class _EmbedderHandler(ModelHandler[str, Any, Embedder]):
    """RunInference's view of an `Embedder`: a batch of texts in, one vector per text out."""

    def __init__(self, spec: str, dim: int | None, query: bool, max_batch_size: int):
        super().__init__()
        self._spec, self._dim, self._query = spec, dim, query
        self._max_batch_size = max_batch_size

    def load_model(self) -> Embedder:
        return load_embedder(self._spec, self._dim)

    def run_inference(
        self, batch: Sequence[str], model: Embedder, inference_args: dict[str, Any] | None = None
    ) -> list[list[float]]:
        return [list(map(float, v)) for v in model.embed(list(batch), query=self._query)]

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"max_batch_size": self._max_batch_size}

    def share_model_across_processes(self) -> bool:
        return True  # one copy of the weights per worker, not per thread

    def __repr__(self) -> str:
        return f"TriageEmbeddings({self._spec})"


class TriageEmbeddings(EmbeddingsManager):
    """Chunks in, chunks with `embedding.dense_embedding` out (documents, not queries)."""

    def __init__(
        self,
        spec: str = DEFAULT_EMBEDDER,
        dim: int | None = None,
        *,
        query: bool = False,
        max_batch_size: int = 32,
    ):
        super().__init__(type_adapter=create_text_adapter())
        self.spec, self.dim, self.query, self.batch = spec, dim, query, max_batch_size

    def get_model_handler(self) -> ModelHandler:
        return _EmbedderHandler(self.spec, self.dim, self.query, self.batch)

    def get_ptransform_for_processing(self, **kwargs: Any) -> Any:
        return RunInference(model_handler=_TextEmbeddingHandler(self))


def index_documents(
    docs: Sequence[Any],
    store: VectorStore,
    spec: str = DEFAULT_EMBEDDER,
    dim: int | None = None,
    pipeline_args: Sequence[str] = (),
) -> int:
    """Embed and upsert every chunk of `docs`; returns the number of chunks written."""
    import apache_beam as beam
    from apache_beam.ml.rag.ingestion.base import VectorDatabaseWriteTransform
    from apache_beam.ml.transforms.base import MLTransform
    from apache_beam.options.pipeline_options import PipelineOptions

    chunks = [chunk for doc in docs for chunk in chunk_document(doc)]
    store.ensure()
    artifacts = tempfile.mkdtemp(prefix="triage-index-")  # MLTransform wants a fresh folder
    with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
        _ = (
            pipeline
            | "Chunks" >> beam.Create(chunks)
            | "Embed"
            >> MLTransform(write_artifact_location=artifacts).with_transform(
                TriageEmbeddings(spec, dim)
            )
            | "Write" >> VectorDatabaseWriteTransform(store.writer())
        )
    return len(chunks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage index", description=__doc__.splitlines()[0])
    parser.add_argument("--articles", default=None, help="folder of Markdown articles")
    parser.add_argument("--cases", nargs="*", default=[], help="JSON lines of resolved cases")
    parser.add_argument("--vector_store", required=True, help="Milvus Lite file or server URI")
    parser.add_argument("--collection", default=DEFAULT_COLLECTION)
    parser.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    parser.add_argument("--embedding_dim", type=int, default=None)
    args, beam_args = parser.parse_known_args(argv)
    if not args.articles and not args.cases:
        parser.error("nothing to index: give --articles and/or --cases")
    docs = read_documents(args.articles, args.cases)
    dim = embedding_width(args.embedding_model, args.embedding_dim)
    store = VectorStore(args.vector_store, dim=dim, collection=args.collection)
    started = time.monotonic()
    chunks = index_documents(docs, store, args.embedding_model, args.embedding_dim, beam_args)
    seconds = time.monotonic() - started
    print(
        f"index: {len(docs)} documents, {chunks} chunks into {store.uri}:{store.collection} "
        f"({store.count()} in the collection) in {seconds:.1f} s",
        file=sys.stderr,
    )
    return 0
