"""Parse the model's triage reply and route the chat: `main`, `negative` or `error`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from triage import metrics
from triage.infer import Ask
from triage.parse import ParseFailure, parse_reply
from triage.records import DeadLetter, Stage, TriageResult, utc_now

__all__ = ["ERROR", "MAIN", "NEGATIVE", "RouteBySentiment"]

MAIN = "main"
NEGATIVE = "negative"
ERROR = "error"


class RouteBySentiment(beam.DoFn):
    """(Ask, PredictionResult) -> `main` TriageResult (sentiment 0/1), `negative` Ask carrying
    its TriageResult (sentiment -1, for the apology stage), or an `error` DeadLetter.
    """

    def __init__(self) -> None:
        self._sentiment = {s: metrics.counter(name) for s, name in metrics.SENTIMENT.items()}
        self._unparseable = metrics.counter(metrics.REPLIES_UNPARSEABLE)
        self._reply_chars = metrics.distribution(metrics.REPLY_CHARS)

    def process(self, element: tuple[Ask, PredictionResult]) -> Iterator[Any]:
        ask, prediction = element
        chat = ask.chat
        reply = prediction.inference
        try:
            reply_text = reply if isinstance(reply, str) else str(reply)
            self._reply_chars.update(len(reply_text))
            parsed = parse_reply(reply_text, prompt=prediction.example)
        except Exception as err:  # noqa: BLE001 - parse_reply should never raise; if it does, keep the chat
            parsed = ParseFailure("internal_error", repr(err)[:500])
            reply_text = repr(reply)[:10_000]
        if isinstance(parsed, ParseFailure):
            self._unparseable.inc()
            yield beam.pvalue.TaggedOutput(
                ERROR,
                DeadLetter(
                    stage=Stage.TRIAGE_PARSE.value,
                    reason=parsed.reason,
                    detail=parsed.detail,
                    payload=chat.payload,
                    chat_id=chat.chat_id,
                    model_reply=reply_text,
                    attempt=chat.attempt,
                    message_id=chat.message_id,
                    model_id=prediction.model_id,
                    prompt_version=ask.prompt_version,
                ),
            )
            return
        self._sentiment[parsed.sentiment].inc()
        result = TriageResult(
            chat_id=chat.chat_id,
            user_id=chat.user_id,
            chat_message=chat.chat_message,
            sentiment=parsed.sentiment,
            summary=parsed.summary,
            model_id=str(prediction.model_id),
            prompt_version=ask.prompt_version,
            attempt=chat.attempt,
            created_at=utc_now(),
        )
        if parsed.sentiment < 0:
            yield beam.pvalue.TaggedOutput(NEGATIVE, Ask(chat=chat, triage=result))
        else:
            yield beam.pvalue.TaggedOutput(MAIN, result)
