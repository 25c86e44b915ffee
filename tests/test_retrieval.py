"""Similar resolved cases: the shipped documents, chunking, scoring, and the real write path
(Beam's MLTransform and VectorDatabaseWriteTransform into Milvus Lite) for the local model and
for keras-hub's EmbeddingGemma architecture with small random weights."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest

from triage.retrieval.documents import Document, chunk_document, read_documents
from triage.retrieval.embed_eval import ranked_documents, score

REPO = Path(__file__).resolve().parent.parent
LANGUAGES = ("en", "ko", "ja")
CASES = [REPO / "examples" / f"resolved_cases_{lang}.jsonl" for lang in LANGUAGES]


def _docs() -> list[Document]:
    return read_documents(REPO / "examples" / "knowledge", CASES)


def test_articles_and_cases_cover_every_topic_in_three_languages():
    docs = _docs()
    kinds = collections.Counter((d.kind, d.topic, d.language) for d in docs)
    topics = {d.topic for d in docs}
    assert len(topics) == 18
    for topic in topics:
        for language in LANGUAGES:
            assert kinds[("article", topic, language)] == 1
            assert kinds[("case", topic, language)] == 1
    assert all(d.remedy for d in docs)  # every policy and case names its remedy
    assert all(d.reply for d in docs if d.kind == "case")
    assert len({d.doc_id for d in docs}) == len(docs)


def test_the_retrieval_set_is_balanced_and_shares_no_text_with_the_store():
    queries = [json.loads(line) for line in (REPO / "eval" / "retrieval.jsonl").open()]
    pairs = collections.Counter((q["topic"], q["language"]) for q in queries)
    assert len(queries) == 108 and set(pairs.values()) == {2}
    corpus = "\n".join(d.text + "\n" + d.reply for d in _docs())
    for q in queries:  # written apart from the articles and cases, not copied from them
        for line in q["chat_message"].splitlines():
            text = line.split(":", 1)[-1].strip()
            assert len(text) < 40 or text not in corpus, (q["id"], text)


def test_chunks_have_stable_ids_and_fit():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * (40 + i * 7) for i in range(12))
    doc = Document("kb-x-en", "article", "en", "x", "A title", text, remedy="refund")
    chunks = chunk_document(doc, limit=600)
    assert [c.id for c in chunks] == [f"kb-x-en#{i}" for i in range(len(chunks))]
    assert len(chunks) > 3 and all(len(c.content.text) <= 600 for c in chunks)
    assert all(c.content.text.startswith("A title") for c in chunks)
    assert [c.id for c in chunk_document(doc, limit=600)] == [c.id for c in chunks]
    body = "".join(c.content.text.removeprefix("A title") for c in chunks)
    assert "".join(body.split()) == "".join(text.split())  # nothing lost, nothing repeated
    assert chunks[0].metadata["remedy"] == "refund" and chunks[0].metadata["chunks"] == len(chunks)


def test_scores_count_the_first_relevant_document():
    ranked = [["a", "b"], ["c", "d", "e", "f", "g", "h"], ["x"]]
    relevant = [{"a"}, {"h"}, {"y"}]
    assert score(ranked, relevant) == {
        "recall@1": round(1 / 3, 3),
        "recall@5": round(1 / 3, 3),
        "mrr": round((1 + 1 / 6) / 3, 3),
        "queries": 3,
    }
    assert ranked_documents(["a#0", "b#1", "a#2", "c#0"]) == ["a", "b", "c"]


def _index_and_check(tmp_path: Path, spec: str, dim: int | None, docs: list[Document]) -> None:
    from triage.retrieval.embedders import load_embedder
    from triage.retrieval.index import index_documents
    from triage.retrieval.store import VectorStore

    model = load_embedder(spec, dim)
    store = VectorStore(str(tmp_path / "store.db"), dim=model.dim, collection="t")
    chunks = index_documents(docs, store, spec, dim)
    assert store.count() == chunks
    assert index_documents(docs, store, spec, dim) == chunks
    assert store.count() == chunks  # the same documents again: updated, not duplicated
    changed = [Document(**{**docs[0].__dict__, "text": docs[0].text + "\n\nUpdated line."})]
    index_documents(changed, store, spec, dim)
    assert store.count() == chunks
    last = chunk_document(changed[0])[-1]  # the added paragraph ends the document
    vector = model.embed([last.content.text], query=False)
    assert vector.shape == (1, model.dim)
    np.testing.assert_allclose(np.linalg.norm(vector, axis=1), 1.0, rtol=1e-4)
    top = store.search(vector, limit=1)[0][0]
    assert top.chunk_id == last.id and "Updated line." in top.text
    assert top.metadata["doc_id"] == docs[0].doc_id


def test_indexing_with_the_local_model_is_idempotent(tmp_path):
    docs = [d for d in _docs() if d.topic in ("baggage-delayed", "duplicate-charge")]
    _index_and_check(tmp_path, "e5-small", None, docs)


@pytest.mark.model
def test_the_embedding_gemma_path_loads_embeds_and_writes(tmp_path, tiny_preset):
    """keras-hub's EmbeddingGemma architecture (bidirectional Gemma 3, mean pooling, two dense
    projections, unit norm) from a preset directory, as production loads the real one, cut to
    a Matryoshka width, through MLTransform into the store."""
    import keras_hub

    proto = (Path(tiny_preset) / "assets" / "tokenizer" / "vocabulary.spm").read_bytes()
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=proto, has_vision_tokens=False)
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=896,
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=64,
        intermediate_dim=128,
        head_dim=32,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        use_sliding_window_attention=True,
        sliding_window_size=512,
        use_bidirectional_attention=True,
        is_embedding_model=True,
        pooling_intermediate_dim=128,
        embedding_dim=64,
        dtype="float32",
    )
    preprocessor = keras_hub.models.Gemma3TextEmbedderPreprocessor(tokenizer, sequence_length=64)
    embedder = keras_hub.models.Gemma3TextEmbedder(backbone=backbone, preprocessor=preprocessor)
    preset = tmp_path / "embedding-gemma-tiny"
    embedder.save_to_preset(str(preset))

    docs = [d for d in _docs() if d.topic == "account-locked"]
    _index_and_check(tmp_path, f"keras-hub:{preset}", 32, docs)


def test_retrieved_cases_are_one_per_document_in_a_language_the_draft_can_use():
    from triage.retrieval.context import draft_languages
    from triage.retrieval.similar import similar_from_response

    ids = ["kb-ko#0", "kb-en#0", "kb-en#1", "case-es#0", "kb-ja#0", "case-x#0"]
    langs = ["ko", "en", "en", "es", "ja", ""]
    response = {
        "id": ids,
        "distance": [0.95, 0.9, 0.89, 0.8, 0.7, 0.6],
        "fields": [
            {"metadata": {"doc_id": i.split("#")[0], "language": lang}}
            for i, lang in zip(ids, langs, strict=True)
        ],
    }
    languages = draft_languages("Cliente: la factura de la luz es el doble, no lo entiendo.")
    assert languages == {"es", "en"}
    found = similar_from_response(response, 0.0, languages, limit=2)
    assert [s.doc_id for s in found] == ["kb-en", "case-es"]  # Korean skipped, kb-en once
    everything = similar_from_response(response, 0.0)
    assert [s.doc_id for s in everything] == ["kb-ko", "kb-en", "case-es", "kb-ja", "case-x"]
