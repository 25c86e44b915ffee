"""`triage embed-eval`: which embedding model finds the case that answers a chat, per language.

The set (`eval/retrieval.jsonl`) is 108 chats written by hand for this purpose, 36 each in
English, Korean and Japanese, two per topic and language, never trained on; the store holds
the example knowledge articles and resolved cases (`examples/`), one of each per topic and
language. A query is answered when a document of its topic **in its language** comes back:
`recall@k` is the share of queries with one in the first k documents, `MRR` the mean of
1 / the first one's rank. The same with any language counted is reported beside it.

Each model is embedded once at its full width; narrower widths are its Matryoshka cuts.
Speed is documents embedded per second on this machine; size is the Milvus Lite file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from triage.retrieval.documents import Document, chunk_document, read_documents
from triage.retrieval.embedders import DEFAULT_EMBEDDER, load_embedder, truncate
from triage.retrieval.store import VectorStore

__all__ = ["evaluate_retrieval", "main", "ranked_documents", "score"]

LANGUAGES = ("en", "ko", "ja")
DEFAULT_CONFIGS = ("e5-small:384", "e5-small:128", "use-m3:512", "use-m3:128")


def ranked_documents(chunk_ids: Sequence[str]) -> list[str]:
    """Document ids in the order their first chunk ranks (`doc#3` -> `doc`)."""
    seen: list[str] = []
    for chunk_id in chunk_ids:
        doc = chunk_id.rsplit("#", 1)[0]
        if doc not in seen:
            seen.append(doc)
    return seen


def score(ranked: Sequence[Sequence[str]], relevant: Sequence[set[str]]) -> dict[str, float]:
    """recall@1, recall@5 and MRR over queries (each query's ranked doc ids, relevant ids)."""
    firsts = []
    for docs, wanted in zip(ranked, relevant, strict=True):
        rank = next((i + 1 for i, doc in enumerate(docs) if doc in wanted), None)
        firsts.append(rank)
    n = max(len(firsts), 1)
    return {
        "recall@1": round(sum(r == 1 for r in firsts) / n, 3),
        "recall@5": round(sum(r is not None and r <= 5 for r in firsts) / n, 3),
        "mrr": round(sum(1 / r for r in firsts if r) / n, 3),
        "queries": len(firsts),
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def evaluate_retrieval(
    queries: Sequence[dict[str, Any]],
    docs: Sequence[Document],
    configs: Sequence[str] = DEFAULT_CONFIGS,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """One result per `model:dim` config: scores per language, speed and index size."""
    chunks = [chunk for doc in docs for chunk in chunk_document(doc)]
    by_id = {doc.doc_id: doc for doc in docs}
    results = []
    embedded: dict[str, tuple[np.ndarray, np.ndarray, float, float]] = {}
    for config in configs:
        spec, _, width = config.rpartition(":")
        if spec not in embedded:
            model = load_embedder(spec)
            model.embed(["warm up"], query=False)
            started = time.monotonic()
            doc_vectors = model.embed([c.content.text for c in chunks], query=False)
            doc_seconds = time.monotonic() - started
            started = time.monotonic()
            query_vectors = model.embed([q["chat_message"] for q in queries], query=True)
            query_seconds = time.monotonic() - started
            embedded[spec] = (doc_vectors, query_vectors, doc_seconds, query_seconds)
        doc_vectors, query_vectors, doc_seconds, query_seconds = embedded[spec]
        dim = min(int(width), doc_vectors.shape[1])
        with tempfile.TemporaryDirectory(prefix="embed-eval-") as folder:
            path = Path(folder) / "store.db"
            store = VectorStore(str(path), dim=dim, collection="eval")
            store.ensure()
            client = store.client()
            rows = [
                {
                    "id": c.id,
                    "embedding": [float(x) for x in v],
                    "content": c.content.text[:2048],
                    "metadata": c.metadata,
                }
                for c, v in zip(chunks, truncate(doc_vectors, dim), strict=True)
            ]
            client.upsert("eval", rows)
            client.close()
            hits = store.search(truncate(query_vectors, dim), limit=20)
            size = _size(path)
        ranked = [ranked_documents([h.chunk_id for h in found]) for found in hits]
        result: dict[str, Any] = {
            "model": spec,
            "dim": dim,
            "docs_per_s": round(len(chunks) / max(doc_seconds, 1e-9), 1),
            "queries_per_s": round(len(queries) / max(query_seconds, 1e-9), 1),
            "index_bytes": size,
            "vector_bytes": len(chunks) * dim * 4,
        }
        for language in LANGUAGES:
            picked = [i for i, q in enumerate(queries) if q["language"] == language]
            same = [
                {
                    d
                    for d, doc in by_id.items()
                    if doc.topic == queries[i]["topic"] and doc.language == language
                }
                for i in picked
            ]
            anywhere = [
                {d for d, doc in by_id.items() if doc.topic == queries[i]["topic"]} for i in picked
            ]
            result[language] = score([ranked[i] for i in picked], same)
            result[f"{language}_any_language"] = score([ranked[i] for i in picked], anywhere)
        results.append(result)
        if progress:
            progress(result)
    return results


def _line(result: dict[str, Any]) -> str:
    parts = [f"{result['model']}/{result['dim']}:"]
    for language in LANGUAGES:
        s = result[language]
        parts.append(
            f"{language} r@1 {s['recall@1']:.2f} r@5 {s['recall@5']:.2f} mrr {s['mrr']:.2f}"
        )
    parts.append(f"{result['docs_per_s']} docs/s, index {result['index_bytes'] / 1e6:.1f} MB")
    return "  ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage embed-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--queries", default="eval/retrieval.jsonl")
    parser.add_argument("--articles", default="examples/knowledge")
    parser.add_argument(
        "--cases",
        nargs="*",
        default=[f"examples/resolved_cases_{lang}.jsonl" for lang in LANGUAGES],
    )
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), help="model:dim")
    parser.add_argument("--out", default=None, help="write the results here (JSON)")
    args = parser.parse_args(argv)
    queries = [
        json.loads(line)
        for line in Path(args.queries).read_text("utf-8").splitlines()
        if line.strip()
    ]
    docs = read_documents(args.articles, args.cases)
    print(f"embed-eval: {len(queries)} queries, {len(docs)} documents", file=sys.stderr)
    results = evaluate_retrieval(
        queries, docs, args.configs, progress=lambda r: print(_line(r), file=sys.stderr)
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    default = next((r for r in results if r["model"] == DEFAULT_EMBEDDER), results[0])
    print(
        "embed-eval: recall@5 "
        + ", ".join(f"{lang} {default[lang]['recall@5']:.2f}" for lang in LANGUAGES)
    )
    return 0
