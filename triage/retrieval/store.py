"""The vector store: Milvus, embedded (Milvus Lite, a local file, no server) or a cluster.

Why Milvus: Beam ships both halves for it (`MilvusVectorWriterConfig` for
`VectorDatabaseWriteTransform`, `MilvusSearchEnrichmentHandler` for `Enrichment`) in pure
Python, so the same code runs here on Milvus Lite and in production on a Milvus cluster or
Zilliz Cloud (`--vector_store http://host:19530`). The JDBC writers (AlloyDB, Cloud SQL) need
a Java expansion service these machines cannot download, and BigQuery's `VECTOR_SEARCH` has
no local emulator. Writes are upserts on the chunk id: re-indexing never duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_COLLECTION", "Hit", "VectorStore"]

DEFAULT_COLLECTION = "similar_cases"
_TEXT_LIMIT = 8192
# Milvus Lite serves pymilvus over an in-process gRPC server that does not implement
# AllocTimestamp; pymilvus asks, falls back, and gRPC logs a traceback at ERROR for each call.
logging.getLogger("grpc._server").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    score: float  # cosine similarity
    metadata: dict[str, Any]
    text: str


@dataclass(frozen=True)
class VectorStore:
    """A Milvus collection of chunks: `uri` is a local `*.db` file (Milvus Lite) or a server."""

    uri: str
    dim: int
    collection: str = DEFAULT_COLLECTION
    token: str = ""

    @property
    def embedded(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://"))

    def connection(self) -> Any:
        from apache_beam.ml.rag.utils import MilvusConnectionParameters

        return MilvusConnectionParameters(uri=self.uri, token=self.token, timeout=5.0)

    def client(self) -> Any:
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri, token=self.token)

    def ensure(self) -> None:
        """Create the collection if it is missing; refuse one of another dimension."""
        from pymilvus import DataType

        client = self.client()
        try:
            if client.has_collection(self.collection):
                fields = client.describe_collection(self.collection)["fields"]
                dims = [f["params"].get("dim") for f in fields if f["name"] == "embedding"]
                if dims and int(dims[0]) != self.dim:
                    raise ValueError(
                        f"collection {self.collection} holds {dims[0]}-dimensional vectors, "
                        f"not {self.dim}: index into another collection"
                    )
                return
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
            schema.add_field("content", DataType.VARCHAR, max_length=_TEXT_LIMIT)
            schema.add_field("metadata", DataType.JSON)
            index = client.prepare_index_params()
            kind = "FLAT" if self.embedded else "AUTOINDEX"
            index.add_index("embedding", metric_type="COSINE", index_type=kind)
            client.create_collection(self.collection, schema=schema, index_params=index)
        finally:
            client.close()

    def writer(self, batch_size: int = 256) -> Any:
        """The `VectorDatabaseWriteTransform` config: id, dense embedding, text, metadata."""
        from apache_beam.ml.rag.ingestion.jdbc_common import WriteConfig
        from apache_beam.ml.rag.ingestion.milvus_search import (
            MilvusVectorWriterConfig,
            MilvusWriteConfig,
        )
        from apache_beam.ml.rag.ingestion.postgres_common import ColumnSpecsBuilder

        specs = (
            ColumnSpecsBuilder()
            .with_id_spec()
            .with_embedding_spec(convert_fn=lambda values: [float(v) for v in values])
            .with_content_spec(convert_fn=lambda text: (text or "")[: _TEXT_LIMIT // 4])
            .with_metadata_spec(convert_fn=dict)
            .build()
        )
        return MilvusVectorWriterConfig(
            connection_params=self.connection(),
            write_config=MilvusWriteConfig(
                collection_name=self.collection,
                write_config=WriteConfig(write_batch_size=batch_size),
            ),
            column_specs=specs,
        )

    def search(self, vectors: Sequence[Sequence[float]], limit: int) -> list[list[Hit]]:
        """Nearest chunks for each vector (for `embed-eval` and tools; the pipeline uses
        `enrichment_handler`)."""
        client = self.client()
        try:
            client.load_collection(self.collection)
            found = client.search(
                self.collection,
                data=[list(map(float, v)) for v in vectors],
                limit=limit,
                output_fields=["content", "metadata"],
                search_params={"metric_type": "COSINE"},
            )
        finally:
            client.close()
        return [
            [
                Hit(
                    chunk_id=str(hit["id"]),
                    score=float(hit["distance"]),
                    metadata=dict(hit["entity"].get("metadata") or {}),
                    text=str(hit["entity"].get("content") or ""),
                )
                for hit in hits
            ]
            for hits in found
        ]

    def documents(self, doc_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each document's metadata and full text (its chunks joined), by document id: what
        the review page shows beside a draft. Missing ids are left out."""
        if not doc_ids:
            return {}
        client = self.client()
        try:
            client.load_collection(self.collection)
            firsts = client.get(
                self.collection, ids=[f"{d}#0" for d in doc_ids], output_fields=["metadata"]
            )
            wanted = [
                f"{row['metadata']['doc_id']}#{i}"
                for row in firsts
                for i in range(int(row["metadata"].get("chunks", 1)))
            ]
            rows = client.get(self.collection, ids=wanted, output_fields=["content", "metadata"])
        finally:
            client.close()
        found: dict[str, dict[str, Any]] = {}
        for row in sorted(rows, key=lambda r: int(str(r["id"]).rsplit("#", 1)[1])):
            meta = dict(row["metadata"])
            doc = found.setdefault(meta["doc_id"], {**meta, "text": ""})
            doc["text"] = (doc["text"] + "\n\n" + str(row["content"])).strip()
        return found

    def count(self) -> int:
        client = self.client()
        try:
            client.load_collection(self.collection)
            rows = client.query(self.collection, filter="", output_fields=["count(*)"])
            return int(rows[0]["count(*)"])
        finally:
            client.close()

    def enrichment_handler(self, limit: int) -> Any:
        """Beam's Milvus handler for `Enrichment`: top `limit` chunks by cosine similarity."""
        from apache_beam.ml.rag.enrichment.milvus_search import (
            MilvusSearchEnrichmentHandler,
            MilvusSearchParameters,
            VectorSearchParameters,
        )

        return MilvusSearchEnrichmentHandler(
            connection_parameters=self.connection(),
            search_parameters=MilvusSearchParameters(
                collection_name=self.collection,
                search_strategy=VectorSearchParameters(
                    anns_field="embedding", limit=limit, search_params={"metric_type": "COSINE"}
                ),
                output_fields=["content", "metadata"],
            ),
            collection_load_parameters=None,
        )
