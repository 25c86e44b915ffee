"""Dissatisfied customers' drafts with similar resolved cases: the real pipeline on the
DirectRunner, Beam's Enrichment with the Milvus handler on a Milvus Lite store that
`index_documents` filled with the example articles and cases, and the store unreachable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import ModelHandler, PredictionResult
from apache_beam.testing.test_pipeline import TestPipeline

from tests.fakes import ScriptedModel, ScriptedTriageHandler
from triage.pipeline import TriageChats
from triage.records import DeadLetter, Draft, TriageResult, from_json
from triage.retrieval.documents import read_documents
from triage.retrieval.index import index_documents
from triage.retrieval.similar import SimilarSettings
from triage.retrieval.store import VectorStore
from triage.sinks import OUTPUT_FILES, WriteJsonLines

REPO = Path(__file__).resolve().parent.parent
CHATS = {
    "bag": "[neg] Customer: my suitcase never came off the belt in Lisbon, two days now, "
    "nobody answers the phone at the airport",
    "twice": "[neg] 고객: 같은 주문인데 카드에서 두 번 결제됐어요. 빨리 처리해 주세요",
    "late": "[neg] お客様: 注文してから1時間半たってもまだ届きません。もう冷めてるでしょう",
    "ok": "[pos] Thanks, all sorted!",
}
EXPECTED_TOPIC = {
    "bag": "baggage-delayed",
    "twice": "duplicate-charge",
    "late": "food-late-delivery",
}


class EchoContext(ModelHandler[str, PredictionResult, ScriptedModel]):
    """Drafts that repeat what the prompt put between <similar> and </similar>."""

    def load_model(self) -> ScriptedModel:
        return ScriptedModel()

    def run_inference(
        self, batch: Sequence[str], model: ScriptedModel, inference_args: Any = None
    ) -> Iterable[PredictionResult]:
        found = [re.search(r"^<similar>(.*)</similar>$", p, re.M) for p in batch]
        return [
            PredictionResult(p, "context: " + (m.group(1) if m else "none"), "scripted")
            for p, m in zip(batch, found, strict=True)
        ]


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("store") / "cases.db"
    docs = read_documents(
        REPO / "examples" / "knowledge",
        [REPO / "examples" / f"resolved_cases_{lang}.jsonl" for lang in ("en", "ko", "ja")],
    )
    index_documents(docs, VectorStore(str(path), dim=384))
    return str(path)


def _run(settings: SimilarSettings, out: Path) -> dict[str, list[Any]]:
    payloads = [
        json.dumps({"id": k, "user_id": "u", "chat_message": v}, ensure_ascii=False).encode()
        for k, v in CHATS.items()
    ]
    with TestPipeline() as pipeline:
        outputs = (
            pipeline
            | beam.Create(payloads)
            | TriageChats(
                ScriptedTriageHandler(),
                EchoContext(),
                model_id="scripted",
                apology_prompt_version="apology-v3",
                max_prompt_tokens=4000,
                similar=settings,
            )
        )
        _ = outputs | WriteJsonLines(str(out))
    types = {"summaries": TriageResult, "drafts": Draft, "dead_letters": DeadLetter}
    return {
        name: [from_json(types[name], line) for line in (out / f).read_text("utf-8").splitlines()]
        for name, f in OUTPUT_FILES.items()
    }


def test_drafts_come_with_the_cases_that_match_their_problem(store_uri, tmp_path):
    seen = _run(SimilarSettings(uri=store_uri, dim=384, limit=5), tmp_path)
    drafts = {d.chat_id: d for d in seen["drafts"]}
    assert set(drafts) == set(EXPECTED_TOPIC) and not seen["dead_letters"]
    assert [s.chat_id for s in seen["summaries"]] == ["ok"]
    docs = {d.doc_id: d for d in read_documents(REPO / "examples" / "knowledge")}
    for chat_id, topic in EXPECTED_TOPIC.items():
        draft = drafts[chat_id]
        assert draft.retrieval == "ok"
        assert 3 <= len(draft.similar_ids) <= 5  # five chunks, one entry per document
        assert list(draft.similar_scores) == sorted(draft.similar_scores, reverse=True)
        # recall@5 is 1.0 for English and Korean on eval/retrieval.jsonl, 0.94 for Japanese
        assert any(topic in doc_id for doc_id in draft.similar_ids), draft.similar_ids
        # The prompt carried them as one escaped JSON string (echoed back by the handler).
        context = json.loads(json.loads(draft.draft.removeprefix("context: ")))
        assert len(context) == len(draft.similar_ids) and all("title" in c for c in context)
        article = next((docs[i] for i in draft.similar_ids if i in docs), None)
        if article is not None:
            assert any(item.get("remedy") == article.remedy for item in context)


def test_an_unreachable_store_still_gives_every_draft(tmp_path):
    seen = _run(SimilarSettings(uri="http://127.0.0.1:9", dim=384, limit=3), tmp_path)
    drafts = {d.chat_id: d for d in seen["drafts"]}
    assert set(drafts) == set(EXPECTED_TOPIC) and not seen["dead_letters"]
    for draft in drafts.values():
        assert draft.retrieval.startswith("unavailable: ")
        assert draft.similar_ids == () and draft.draft == 'context: "[]"'
