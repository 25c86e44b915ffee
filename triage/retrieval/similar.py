"""Negative chats enriched with similar resolved cases before the apology prompt.

`FindSimilar` embeds each chat as a query (RunInference over `TriageEmbeddings`) and looks up
its nearest chunks with Beam's `Enrichment` and `MilvusSearchEnrichmentHandler`. A store that
is down must not stop drafts: `FailSoft` answers "unavailable" instead of raising, the draft is
written without context, and its record says why (`Draft.retrieval`).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.transforms.enrichment import EnrichmentSourceHandler

from triage.retrieval.context import CONTEXT_CHARS, Similar, draft_languages
from triage.retrieval.embedders import DEFAULT_EMBEDDER
from triage.retrieval.store import DEFAULT_COLLECTION, VectorStore

__all__ = [
    "FailSoft",
    "FindSimilar",
    "SimilarSettings",
    "look_up",
    "similar_from_response",
]

_LOG = logging.getLogger(__name__)
# Chunks fetched per case wanted: room for those in other languages and for several chunks of
# one document.
CANDIDATES = 4
RETRIEVAL_OK = "ok"
RETRIEVAL_UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class SimilarSettings:
    """Where to look (`uri`, a Milvus Lite file or server), with which model, how many."""

    uri: str
    dim: int
    collection: str = DEFAULT_COLLECTION
    embedding_model: str = DEFAULT_EMBEDDER
    limit: int = 3
    min_score: float = 0.0

    def store(self) -> VectorStore:
        return VectorStore(self.uri, dim=self.dim, collection=self.collection)


class FailSoft(EnrichmentSourceHandler):
    """Wraps an enrichment handler so that an unreachable store yields `{"unavailable": why}`
    for each request instead of an exception; it reconnects at most every `retry_secs`."""

    def __init__(self, inner: Any, retry_secs: float = 30.0):
        self._inner = inner
        self._retry_secs = retry_secs
        self._up = False
        self._why = "not connected"
        self._next_try = 0.0
        self.use_custom_types = True

    def _connect(self) -> None:
        try:
            self._inner.__enter__()
            self._up = True
        except Exception as err:  # noqa: BLE001 - any failure means: draft without context
            self._up = False
            self._why = f"{type(err).__name__}: {str(err)[:200]}"
            self._next_try = time.monotonic() + self._retry_secs
            _LOG.warning("similar cases unavailable: %s", self._why)

    def __enter__(self) -> FailSoft:
        self._connect()
        return self

    def __call__(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        requests = request if isinstance(request, list) else [request]
        if not self._up and time.monotonic() >= self._next_try:
            self._connect()
        if self._up:
            try:
                found = self._inner(requests)
                return found if isinstance(request, list) else found[0]
            except Exception as err:  # noqa: BLE001
                self._why = f"{type(err).__name__}: {str(err)[:200]}"
                self._next_try = time.monotonic() + self._retry_secs
                self._disconnect()
                _LOG.warning("similar-case search failed: %s", self._why)
        answers = [(r, {"unavailable": self._why}) for r in requests]
        return answers if isinstance(request, list) else answers[0]

    def _disconnect(self) -> None:
        if self._up:
            self._up = False
            try:
                self._inner.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - already broken
                pass

    def __exit__(self, *exc: Any) -> None:
        self._disconnect()

    def batch_elements_kwargs(self) -> dict[str, int]:
        return self._inner.batch_elements_kwargs()


def _as_query(ask: Any) -> Any:
    from apache_beam.ml.rag.types import Chunk, Content

    return Chunk(
        content=Content(text=ask.chat.chat_message), id=ask.chat.chat_id, metadata={"ask": ask}
    )


def similar_from_response(
    response: dict[str, Any],
    min_score: float,
    languages: frozenset[str] | None = None,
    limit: int | None = None,
) -> tuple[Similar, ...]:
    """Milvus hits (chunks) -> one `Similar` per document, best first; only documents in
    `languages` (when given and the document says its language), at most `limit`."""
    found: dict[str, Similar] = {}
    for chunk_id, score, fields in zip(
        response.get("id", []),
        response.get("distance", []),
        response.get("fields", []),
        strict=False,
    ):
        meta = fields.get("metadata") or {}
        if isinstance(meta, str):
            meta = json.loads(meta)
        doc_id = str(meta.get("doc_id") or str(chunk_id).rsplit("#", 1)[0])
        if doc_id in found or float(score) < min_score:
            continue
        if languages and meta.get("language") and meta["language"] not in languages:
            continue
        if limit is not None and len(found) >= limit:
            break
        found[doc_id] = Similar(
            doc_id=doc_id,
            kind=str(meta.get("kind", "")),
            score=round(float(score), 4),
            title=str(meta.get("title", "")),
            remedy=str(meta.get("remedy", "")),
            reply=str(meta.get("reply", "")),
            language=str(meta.get("language", "")),
            text=str(fields.get("content", ""))[:CONTEXT_CHARS],
        )
    return tuple(found.values())


def look_up(settings: SimilarSettings, texts: Sequence[str]) -> list[tuple[Similar, ...]]:
    """The pipeline's retrieval outside Beam, for `triage eval`: the same query embedding, the
    same search and the same per-document results, one tuple per text."""
    vectors = _embedder(settings.embedding_model, settings.dim).embed(list(texts), query=True)
    return [
        similar_from_response(
            {
                "id": [h.chunk_id for h in hits],
                "distance": [h.score for h in hits],
                "fields": [{"metadata": h.metadata, "content": h.text} for h in hits],
            },
            settings.min_score,
            draft_languages(text),
            settings.limit,
        )
        for text, hits in zip(
            texts, settings.store().search(vectors, settings.limit * CANDIDATES), strict=True
        )
    ]


@functools.cache
def _embedder(spec: str, dim: int | None) -> Any:
    """Loaded once per process: `look_up` is called for every batch of an evaluation."""
    from triage.retrieval.embedders import load_embedder

    return load_embedder(spec, dim)


class _Join:
    def __init__(self, min_score: float, limit: int):
        self._min_score, self._limit = min_score, limit

    def __call__(self, chunk: Any, response: dict[str, Any]) -> Any:
        ask = chunk.metadata["ask"]
        if "unavailable" in response:
            return replace(
                ask, similar=(), retrieval=f"{RETRIEVAL_UNAVAILABLE}: {response['unavailable']}"
            )
        languages = draft_languages(ask.chat.chat_message)
        found = similar_from_response(response, self._min_score, languages, self._limit)
        return replace(ask, similar=found, retrieval=RETRIEVAL_OK)


class FindSimilar(beam.PTransform):
    """PCollection[Ask] -> PCollection[Ask] with `similar` and `retrieval` set."""

    def __init__(self, settings: SimilarSettings, timeout_secs: float = 60.0):
        super().__init__()
        self._settings = settings
        self._timeout = timeout_secs

    def expand(self, asks: beam.PCollection) -> beam.PCollection:
        from apache_beam.transforms.enrichment import Enrichment

        from triage.retrieval.index import TriageEmbeddings

        s = self._settings
        embed = TriageEmbeddings(s.embedding_model, s.dim, query=True)
        handler = FailSoft(s.store().enrichment_handler(s.limit * CANDIDATES))
        return (
            asks
            | "AsQuery" >> beam.Map(_as_query)
            | "EmbedChat" >> embed.get_ptransform_for_processing()
            | "Search"
            >> Enrichment(handler, join_fn=_Join(s.min_score, s.limit), timeout=self._timeout)
        )
