"""Ask the model: render a prompt per chat, run it through `RunInference`, catch what fails.

Used twice, for the triage prompt and for the apology prompt. The chat (and, for apologies, its
triage result) travels beside the prompt as the key of the keyed element, so later stages never
have to recover anything from the prompt text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from triage import metrics
from triage.prompts import PromptTooLong, TokenBudget, byte_token_count, load_template
from triage.records import Chat, DeadLetter, TriageResult
from triage.retrieval.context import context_for_prompt

__all__ = ["Ask", "AskModel", "ModelAnswers", "byte_counter"]

TokenCounterFactory = Callable[[], Callable[[str], int]]


@dataclasses.dataclass(frozen=True)
class Ask:
    """The key of one model request: everything needed to use (or dead-letter) its answer."""

    chat: Chat
    triage: TriageResult | None = None
    prompt_version: str = ""
    # For a repair request: the reply that failed to parse, why, and which repair this is.
    previous_answer: str | None = None
    parse_error: str | None = None
    repairs: int = 0
    # Similar resolved cases (triage.retrieval.similar.Similar), when a vector store is set:
    # None when retrieval is off; `retrieval` says "ok" or why it was unavailable.
    similar: tuple[Any, ...] | None = None
    retrieval: str = ""

    def dead_letter(
        self,
        stage: str,
        reason: str,
        detail: str,
        *,
        model_id: str | None,
        model_reply: str | None = None,
        prompt_version: str | None = None,
    ) -> DeadLetter:
        """This request's chat as a dead letter, with its original bytes and context."""
        chat = self.chat
        return DeadLetter(
            stage=stage,
            reason=reason,
            detail=detail,
            payload=chat.payload,
            chat_id=chat.chat_id,
            model_reply=model_reply,
            attempt=chat.attempt,
            model_id=model_id,
            prompt_version=prompt_version or self.prompt_version,
            message_id=chat.message_id,
            repairs=self.repairs,
        )


class ModelAnswers(NamedTuple):
    """What `AskModel` returns: answers as (Ask, PredictionResult), and failures."""

    answers: beam.PCollection
    dead_letters: beam.PCollection


# The repair prompt shows the failed answer; a runaway reply need not be shown whole.
_MAX_PREVIOUS_ANSWER_CHARS = 2000


def byte_counter() -> Callable[[str], int]:
    return byte_token_count


class _RenderPrompts(beam.DoFn):
    DEAD_LETTER = "dead_letter"

    def __init__(
        self,
        template_name: str,
        template_version: str | None,
        max_prompt_tokens: int,
        token_counter: TokenCounterFactory,
        stage: str,
        model_id: str,
    ):
        self._template_name = template_name
        self._template_version = template_version
        self._max_prompt_tokens = max_prompt_tokens
        self._token_counter = token_counter
        self._stage = stage
        self._model_id = model_id
        self._shortened = metrics.counter(metrics.PROMPTS_SHORTENED)
        self._prompt_tokens = metrics.distribution(metrics.PROMPT_TOKENS)
        self._prompt_chars = metrics.distribution(metrics.PROMPT_CHARS)

    def setup(self) -> None:
        self._template = load_template(self._template_name, self._template_version)
        self._budget = TokenBudget(self._max_prompt_tokens, self._token_counter())

    def process(self, ask: Ask) -> Iterator[Any]:
        chat = ask.chat
        values = {"user_id": chat.user_id}
        if ask.triage is not None:
            values["summary"] = ask.triage.summary
            values["similar"] = context_for_prompt(ask.similar)
        if ask.previous_answer is not None:
            values["previous_answer"] = ask.previous_answer[:_MAX_PREVIOUS_ANSWER_CHARS]
            values["error"] = ask.parse_error or ""
        try:
            rendered = self._template.render(chat.chat_message, self._budget, **values)
        except Exception as err:  # noqa: BLE001 - PromptTooLong, or a tokenizer failure
            reason = "prompt_too_long" if isinstance(err, PromptTooLong) else "prompt_error"
            yield beam.pvalue.TaggedOutput(
                self.DEAD_LETTER,
                ask.dead_letter(
                    self._stage,
                    reason,
                    str(err)[:1000],
                    model_id=self._model_id,
                    prompt_version=self._template.version,
                ),
            )
            return
        if rendered.omitted_chars:
            self._shortened.inc()
        if rendered.tokens is not None:
            self._prompt_tokens.update(rendered.tokens)
        self._prompt_chars.update(len(rendered.text))
        # A repaired answer owes its prompt to both templates: "triage-v1+repair-v1".
        version = f"{ask.prompt_version}+{rendered.version}" if ask.repairs else rendered.version
        yield dataclasses.replace(ask, prompt_version=version), rendered.text


def _failed_batch_to_dead_letters(
    failure: tuple[Any, Any], stage: str, model_id: str
) -> Iterator[DeadLetter]:
    """RunInference's failed_inferences holds (batch, (type, repr, traceback)) per failed batch."""
    batch, (_, exc_repr, _) = failure
    for ask, _prompt in batch:
        yield ask.dead_letter(stage, "inference_error", str(exc_repr)[:2000], model_id=model_id)


class AskModel(beam.PTransform):
    """PCollection[Ask] -> ModelAnswers.

    Args:
      handler: an unkeyed model handler (prompt str in, PredictionResult out).
      template_name: prompt template in `prompts/` (`triage`, `apology`).
      template_version: a version id, or None for the newest.
      max_prompt_tokens: chats are shortened (start and end kept) to fit this budget.
      token_counter: picklable factory of a `str -> int` token counter, called once per worker.
      prompt_stage / inference_stage: the dead-letter stages for the two ways this can fail.
      model_id: written into dead letters.
    """

    def __init__(
        self,
        handler: ModelHandler,
        *,
        template_name: str,
        template_version: str | None,
        max_prompt_tokens: int,
        token_counter: TokenCounterFactory = byte_counter,
        prompt_stage: str,
        inference_stage: str,
        model_id: str,
    ):
        super().__init__()
        self._handler = handler
        self._render = _RenderPrompts(
            template_name,
            template_version,
            max_prompt_tokens,
            token_counter,
            prompt_stage,
            model_id,
        )
        self._inference_stage = inference_stage
        self._model_id = model_id

    def expand(self, asks: beam.PCollection) -> ModelAnswers:
        rendered = asks | "RenderPrompt" >> beam.ParDo(self._render).with_outputs(
            _RenderPrompts.DEAD_LETTER, main="prompts"
        )
        answers, failed = (
            rendered.prompts
            | "RunInference"
            >> RunInference(KeyedModelHandler(self._handler)).with_exception_handling()
        )
        stage, model_id = self._inference_stage, self._model_id
        inference_dead = failed.failed_inferences | "FailedBatches" >> beam.FlatMap(
            _failed_batch_to_dead_letters, stage, model_id
        )
        dead = (rendered[_RenderPrompts.DEAD_LETTER], inference_dead) | "Failures" >> beam.Flatten()
        return ModelAnswers(answers=answers, dead_letters=dead)
