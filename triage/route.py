"""Parse the model's triage reply and route the chat: `main`, `negative` or `error`.

An `error` is an `Unparsed` reply, not yet a dead letter: the pipeline first asks the model to
repair it (`repair_ask`), and only what still fails becomes a dead letter (`unparsed_to_dead`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from triage import metrics
from triage.infer import Ask
from triage.parse import ParseFailure, parse_reply
from triage.records import DeadLetter, Stage, TriageResult, utc_now

__all__ = [
    "ERROR",
    "MAIN",
    "NEGATIVE",
    "RouteBySentiment",
    "Unparsed",
    "repair_ask",
    "unparsed_to_dead",
]

MAIN = "main"
NEGATIVE = "negative"
ERROR = "error"


@dataclasses.dataclass(frozen=True)
class Unparsed:
    """A reply that did not parse, with everything needed to repair or dead-letter it."""

    ask: Ask
    reply: str
    reason: str
    detail: str
    model_id: str


def repair_ask(unparsed: Unparsed) -> Ask:
    """The next repair request: the same chat, its failed answer and the parser's verdict."""
    metrics.counter(metrics.REPAIR_ATTEMPTS).inc()
    ask = unparsed.ask
    return dataclasses.replace(
        ask,
        prompt_version=ask.prompt_version.split("+")[0],  # the triage template's version
        previous_answer=unparsed.reply,
        parse_error=f"{unparsed.reason}: {unparsed.detail}",
        repairs=ask.repairs + 1,
    )


def unparsed_to_dead(unparsed: Unparsed) -> DeadLetter:
    return unparsed.ask.dead_letter(
        Stage.TRIAGE_PARSE.value,
        unparsed.reason,
        unparsed.detail,
        model_id=unparsed.model_id,
        model_reply=unparsed.reply,
    )


class RouteBySentiment(beam.DoFn):
    """(Ask, PredictionResult) -> `main` TriageResult (sentiment 0/1), `negative` Ask carrying
    its TriageResult (sentiment -1, for the apology stage), or an `error` Unparsed reply.
    """

    def __init__(self) -> None:
        self._sentiment = {s: metrics.counter(name) for s, name in metrics.SENTIMENT.items()}
        self._unparseable = metrics.counter(metrics.REPLIES_UNPARSEABLE)
        self._repaired = metrics.counter(metrics.REPAIRS_SUCCEEDED)
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
                Unparsed(ask, reply_text, parsed.reason, parsed.detail, str(prediction.model_id)),
            )
            return
        self._sentiment[parsed.sentiment].inc()
        if ask.repairs:
            self._repaired.inc()
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
