"""Turn the apology model's reply into a `Draft` for human review, or a dead letter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from triage import metrics
from triage.draft_checks import draft_warnings
from triage.infer import Ask
from triage.records import Draft, Stage, utc_now
from triage.retrieval.context import context_for_prompt

__all__ = ["MakeDrafts"]


class MakeDrafts(beam.DoFn):
    """(Ask with its TriageResult, PredictionResult) -> Draft, or a DeadLetter if empty."""

    DEAD_LETTER = "dead_letter"

    def __init__(self) -> None:
        self._drafts = metrics.counter(metrics.DRAFTS)
        self._failed = metrics.counter(metrics.DRAFTS_FAILED)

    def process(self, element: tuple[Ask, PredictionResult]) -> Iterator[Any]:
        ask, prediction = element
        chat, triage = ask.chat, ask.triage
        reply = prediction.inference if isinstance(prediction.inference, str) else ""
        text = reply.strip()
        if not text or triage is None:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                self.DEAD_LETTER,
                ask.dead_letter(
                    Stage.APOLOGY_PARSE.value,
                    "empty_draft" if triage is not None else "missing_triage",
                    "the model returned no draft text",
                    model_id=str(prediction.model_id),
                    model_reply=reply,
                ),
            )
            return
        self._drafts.inc()
        yield Draft(
            chat_id=chat.chat_id,
            user_id=chat.user_id,
            chat_message=chat.chat_message,
            sentiment=triage.sentiment,
            summary=triage.summary,
            draft=text,
            model_id=str(prediction.model_id),
            prompt_version=triage.prompt_version,
            apology_prompt_version=ask.prompt_version,
            attempt=chat.attempt,
            created_at=utc_now(),
            # what the retrieved policies say is grounded, as the prompt showed it
            warnings=draft_warnings(
                text, chat.chat_message, context_for_prompt(ask.similar) if ask.similar else ""
            ),
            similar_ids=tuple(item.doc_id for item in ask.similar or ()),
            similar_scores=tuple(item.score for item in ask.similar or ()),
            retrieval=ask.retrieval,
        )
