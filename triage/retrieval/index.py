"""`triage index`: knowledge articles and resolved cases -> embeddings -> the vector store.

The Beam shape the seeds describe: chunks, `MLTransform(...).with_transform(embeddings)`, then
`VectorDatabaseWriteTransform(MilvusVectorWriterConfig)` (`IndexDocuments`). `TriageEmbeddings`
is an `EmbeddingsManager`, so any model behind `triage.retrieval.embedders` (EmbeddingGemma
through keras-hub in production) runs inside `MLTransform` like Beam's own Hugging Face one.

Sources: files (`--articles`, `--cases`) and the review queue's approvals in the `reviews`
table (`--from_bigquery`), in one batch run; or the `approved` topic, streaming
(`--approved_subscription`, `triage.retrieval.sources`). Chunk ids are `doc#n` and writes are
upserts, so indexing a document again, from any source, overwrites it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.ml.rag.embeddings.base import create_text_adapter
from apache_beam.ml.transforms.base import EmbeddingsManager, _TextEmbeddingHandler

from triage import metrics
from triage.retrieval.documents import Document, chunk_document, read_documents
from triage.retrieval.embedders import (
    DEFAULT_EMBEDDER,
    Embedder,
    embedding_width,
    load_embedder,
)
from triage.retrieval.store import DEFAULT_COLLECTION, VectorStore

__all__ = [
    "ChunkOnce",
    "IndexDocuments",
    "TriageEmbeddings",
    "counter_total",
    "index_documents",
    "index_pipeline",
    "main",
]


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


class ChunkOnce(beam.DoFn):
    """The chunks of a bundle's documents, each document once: its last copy in the bundle.

    Beam's Milvus writer upserts a bundle's chunks in one request, and a bundle can hold two
    copies of a document (an approval delivered twice, or one case read from a file and from
    BigQuery). Milvus refuses an upsert naming one id twice (2.6, milvus-io/milvus#45997), and
    2.5 could keep both rows (#44320). Copies in different bundles are separate upserts: the
    later replaces the earlier."""

    def start_bundle(self) -> None:
        self._docs: dict[str, tuple[Document, Any, Any]] = {}

    def process(
        self,
        doc: Document,
        timestamp: Any = beam.DoFn.TimestampParam,
        window: Any = beam.DoFn.WindowParam,
    ) -> None:
        self._docs.pop(doc.doc_id, None)  # the newest copy goes last, and wins
        self._docs[doc.doc_id] = (doc, timestamp, window)

    def finish_bundle(self) -> Any:
        from apache_beam.utils.windowed_value import WindowedValue

        for doc, timestamp, window in self._docs.values():
            chunks = chunk_document(doc)
            metrics.counter(metrics.DOCUMENTS_INDEXED).inc()
            metrics.counter(metrics.CHUNKS_INDEXED).inc(len(chunks))
            for chunk in chunks:
                yield WindowedValue(chunk, timestamp, [window])
        self._docs = {}


class IndexDocuments(beam.PTransform):
    """Documents in; their chunks embedded and upserted into `store` (by chunk id)."""

    def __init__(self, store: VectorStore, spec: str = DEFAULT_EMBEDDER, dim: int | None = None):
        super().__init__()
        self._store, self._spec, self._dim = store, spec, dim

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        from apache_beam.ml.rag.ingestion.base import VectorDatabaseWriteTransform
        from apache_beam.ml.transforms.base import MLTransform

        artifacts = tempfile.mkdtemp(prefix="triage-index-")  # MLTransform wants a fresh folder
        return (
            docs
            | "Chunks" >> beam.ParDo(ChunkOnce())
            | "Embed"
            >> MLTransform(write_artifact_location=artifacts).with_transform(
                TriageEmbeddings(self._spec, self._dim)
            )
            | "Write" >> VectorDatabaseWriteTransform(self._store.writer())
        )


def index_pipeline(
    sources: dict[str, beam.PTransform],
    store: VectorStore,
    spec: str = DEFAULT_EMBEDDER,
    dim: int | None = None,
    options: Any = None,
) -> beam.Pipeline:
    """A pipeline, not yet run, that indexes what every source (label -> a transform from
    the pipeline's start to `Document`s) reads; the collection is created first if missing."""
    store.ensure()
    pipeline = beam.Pipeline(options=options)
    docs = [pipeline | label >> source for label, source in sources.items()]
    merged = docs[0] if len(docs) == 1 else tuple(docs) | "Documents" >> beam.Flatten()
    _ = merged | "Index" >> IndexDocuments(store, spec, dim)
    return pipeline


def index_documents(
    docs: Sequence[Document],
    store: VectorStore,
    spec: str = DEFAULT_EMBEDDER,
    dim: int | None = None,
    pipeline_args: Sequence[str] = (),
) -> int:
    """Embed and upsert every chunk of `docs`; returns the number of chunks written."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(list(pipeline_args))
    pipeline = index_pipeline({"Documents": beam.Create(list(docs))}, store, spec, dim, options)
    pipeline.run().wait_until_finish()
    return sum(len(chunk_document(doc)) for doc in docs)


def counter_total(result: Any, name: str) -> int:
    """A `triage` counter of a run (committed values), for what a run reports."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(
        MetricsFilter().with_namespace(metrics.NAMESPACE).with_name(name)
    )["counters"]
    return int(sum(c.committed or 0 for c in found))


def _arguments() -> argparse.ArgumentParser:
    from review.cli import add_reviews_table_args

    parser = argparse.ArgumentParser(prog="triage index", description=__doc__.splitlines()[0])
    parser.add_argument("--articles", default=None, help="folder of Markdown articles")
    parser.add_argument("--cases", nargs="*", default=[], help="JSON lines of resolved cases")
    parser.add_argument(
        "--from_bigquery",
        action="store_true",
        help="the approved replies in the review queue's reviews table (--project or "
        "--reviews_table says which)",
    )
    add_reviews_table_args(parser, required=False)
    parser.add_argument("--since", help="with --from_bigquery: decisions at or after this time")
    parser.add_argument(
        "--approved_subscription",
        help="projects/P/subscriptions/S on the approved topic: index approvals as they come "
        "(streaming; --streaming with --project uses the one `triage infra` creates)",
    )
    parser.add_argument("--streaming", action="store_true", help="index the approved topic")
    parser.add_argument(
        "--allow_direct_runner_pubsub",
        action="store_true",
        help="read a real subscription on the DirectRunner (it acks on pull: a crash loses "
        "what was in flight; `--from_bigquery` indexes it again)",
    )
    parser.add_argument("--vector_store", required=True, help="Milvus Lite file or server URI")
    parser.add_argument("--collection", default=DEFAULT_COLLECTION)
    parser.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    parser.add_argument("--embedding_dim", type=int, default=None)
    return parser


def _sources(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """What to read, by stage label; refuses combinations that cannot run together."""
    from review.cli import parse_since, reviews_table_from
    from triage.gcp import Infrastructure
    from triage.retrieval.sources import ReadApprovedFromBigQuery, ReadApprovedFromPubSub

    batch = bool(args.articles or args.cases or args.from_bigquery)
    if args.approved_subscription or args.streaming:
        if batch:
            parser.error("--streaming indexes the approved topic alone; index the rest in batch")
        subscription = args.approved_subscription
        if not subscription:
            if not args.project:
                parser.error("--streaming needs --approved_subscription or --project")
            named = Infrastructure.named(args.project, dataset=args.dataset, prefix=args.prefix)
            subscription = named.approved_index_subscription
        return {"ReadApproved": ReadApprovedFromPubSub(subscription)}
    if not batch:
        parser.error("nothing to index: give --articles, --cases, --from_bigquery or --streaming")
    sources: dict[str, Any] = {}
    docs = read_documents(args.articles, args.cases)
    if docs:
        sources["Files"] = beam.Create(docs)
    if args.from_bigquery:
        if not (args.project or args.reviews_table):
            parser.error("--from_bigquery needs --project or --reviews_table")
        table = reviews_table_from(args)
        sources["Reviews"] = ReadApprovedFromBigQuery(table, parse_since(args.since))
    return sources


def main(argv: Sequence[str] | None = None) -> int:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from triage.cli import direct_runner_refusal

    parser = _arguments()
    args, beam_args = parser.parse_known_args(argv)
    sources = _sources(args, parser)
    streaming = "ReadApproved" in sources
    options = PipelineOptions(beam_args, save_main_session=False)
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if streaming:
        options.view_as(StandardOptions).streaming = True
        refusal = direct_runner_refusal(runner, args.allow_direct_runner_pubsub)
        if refusal:
            parser.error(refusal.replace("chats", "approvals"))
    dim = embedding_width(args.embedding_model, args.embedding_dim)
    store = VectorStore(args.vector_store, dim=dim, collection=args.collection)
    pipeline = index_pipeline(sources, store, args.embedding_model, args.embedding_dim, options)
    where = f"{store.uri}:{store.collection}"
    started = time.monotonic()
    result = pipeline.run()
    if "Dataflow" in runner:  # submitted: it runs there, not in this process
        print(f"index: submitted Dataflow job {getattr(result, 'job_id', lambda: '?')()}")
        return 0
    if streaming:
        print(
            f"index: approvals from {sources['ReadApproved'].subscription} -> {where}",
            file=sys.stderr,
        )
        try:
            result.wait_until_finish()
        except KeyboardInterrupt:
            result.cancel()
        return 0
    result.wait_until_finish()
    seconds = time.monotonic() - started
    unusable = counter_total(result, metrics.APPROVALS_UNUSABLE)
    print(
        f"index: {counter_total(result, metrics.DOCUMENTS_INDEXED)} documents, "
        f"{counter_total(result, metrics.CHUNKS_INDEXED)} chunks into {where} "
        f"({store.count()} in the collection) in {seconds:.1f} s"
        + (f"; {unusable} approvals without a chat skipped" if unusable else ""),
        file=sys.stderr,
    )
    return 0
