"""The pipeline, top to bottom: validate -> prompt -> infer -> parse -> (repair) -> route ->
apology -> write.

`TriageChats` is the whole design diagram as one PTransform over raw message bytes; sources and
sinks stay outside it, so file mode, Pub/Sub and BigQuery all run the same core.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler

from triage import metrics
from triage.apology import MakeDrafts
from triage.infer import Ask, AskModel, TokenCounterFactory, byte_counter
from triage.options import TriageOptions
from triage.parse import decoding_constraints
from triage.prompts import load_template, prompt_version
from triage.records import Stage
from triage.route import ERROR, MAIN, NEGATIVE, RouteBySentiment, repair_ask, unparsed_to_dead
from triage.validate import ValidateChats

__all__ = [
    "TriageChats",
    "TriageOutputs",
    "build_pipeline",
    "handlers_from_options",
    "length_buckets_for",
    "streaming_pipeline",
]


class TriageOutputs(NamedTuple):
    """Every chat ends in exactly one of these three collections."""

    summaries: beam.PCollection
    drafts: beam.PCollection
    dead_letters: beam.PCollection


def _count_dead_letter(dead_letter: Any) -> Any:
    metrics.counter(metrics.DEAD_LETTERS).inc()
    return dead_letter


class TriageChats(beam.PTransform):
    """PCollection[bytes] (raw messages) -> TriageOutputs.

    Args:
      triage_handler / apology_handler: unkeyed model handlers (prompt in, completion out),
        normally two `GemmaModelHandler`s on the same preset with different token budgets.
      model_id: recorded in dead letters that fail before the model answers.
      triage_prompt_version / apology_prompt_version: template versions; None for the newest.
      max_prompt_tokens: prompt budget; chats are shortened to fit.
      token_counter: picklable factory of the model's token counter.
      repair_attempts: how many times a reply that fails to parse is shown back to the model
        with the parser's reason (the `repair` prompt) before the chat is dead-lettered.
      similar: where to find similar resolved cases for dissatisfied customers
        (`triage.retrieval.similar.SimilarSettings`); None leaves drafts without them.
    """

    def __init__(
        self,
        triage_handler: ModelHandler,
        apology_handler: ModelHandler,
        *,
        model_id: str,
        triage_prompt_version: str | None = None,
        apology_prompt_version: str | None = None,
        max_prompt_tokens: int = 1024,
        token_counter: TokenCounterFactory = byte_counter,
        repair_attempts: int = 1,
        repair_prompt_version: str | None = None,
        similar: Any = None,
    ):
        super().__init__()
        self._similar = similar  # triage.retrieval.similar.SimilarSettings, or None
        common = {
            "max_prompt_tokens": max_prompt_tokens,
            "token_counter": token_counter,
            "model_id": model_id,
        }
        self._triage = AskModel(
            triage_handler,
            template_name="triage",
            template_version=triage_prompt_version,
            prompt_stage=Stage.PROMPT.value,
            inference_stage=Stage.TRIAGE_INFERENCE.value,
            **common,
        )
        # Beam pipelines are acyclic: each repair attempt is its own stage, unrolled.
        self._repairs = [
            AskModel(
                triage_handler,
                template_name="repair",
                template_version=repair_prompt_version,
                prompt_stage=Stage.REPAIR_PROMPT.value,
                inference_stage=Stage.REPAIR_INFERENCE.value,
                **common,
            )
            for _ in range(repair_attempts)
        ]
        self._apology = AskModel(
            apology_handler,
            template_name="apology",
            template_version=apology_prompt_version,
            prompt_stage=Stage.APOLOGY_PROMPT.value,
            inference_stage=Stage.APOLOGY_INFERENCE.value,
            **common,
        )

    def expand(self, payloads: beam.PCollection) -> TriageOutputs:
        chats = payloads | "Validate" >> beam.ParDo(ValidateChats()).with_outputs(
            ValidateChats.DEAD_LETTER, main="chats"
        )
        triage = chats.chats | "ToAsk" >> beam.Map(Ask) | "Triage" >> self._triage
        routed = triage.answers | "ParseAndRoute" >> beam.ParDo(RouteBySentiment()).with_outputs(
            MAIN, NEGATIVE, ERROR
        )
        mains, negatives, model_failures = [routed[MAIN]], [routed[NEGATIVE]], []
        unparsed = routed[ERROR]
        for n, repair in enumerate(self._repairs, start=1):
            answers = unparsed | f"RepairAsk{n}" >> beam.Map(repair_ask) | f"Repair{n}" >> repair
            rerouted = answers.answers | f"RepairRoute{n}" >> beam.ParDo(
                RouteBySentiment()
            ).with_outputs(MAIN, NEGATIVE, ERROR)
            mains.append(rerouted[MAIN])
            negatives.append(rerouted[NEGATIVE])
            model_failures.append(answers.dead_letters)
            unparsed = rerouted[ERROR]
        summaries = mains | "AllSummaries" >> beam.Flatten()
        negative = negatives | "AllNegatives" >> beam.Flatten()
        if self._similar is not None:
            from triage.retrieval.similar import FindSimilar

            negative = negative | "SimilarCases" >> FindSimilar(self._similar)
        apology = negative | "Apology" >> self._apology
        drafts = apology.answers | "MakeDrafts" >> beam.ParDo(MakeDrafts()).with_outputs(
            MakeDrafts.DEAD_LETTER, main="drafts"
        )
        dead_letters = (
            (
                chats[ValidateChats.DEAD_LETTER],
                triage.dead_letters,
                *model_failures,
                unparsed | "Unrepaired" >> beam.Map(unparsed_to_dead),
                apology.dead_letters,
                drafts[MakeDrafts.DEAD_LETTER],
            )
            | "AllDeadLetters" >> beam.Flatten()
            | "CountDeadLetters" >> beam.Map(_count_dead_letter)
        )
        return TriageOutputs(summaries, drafts.drafts, dead_letters)


def length_buckets_for(max_prompt_tokens: int) -> tuple[int, ...]:
    """Prompt-length buckets up to the prompt budget: 384, 512, 1024, ... and the budget.

    The triage instructions alone take about 250 tokens, so most chats fit 384 or 512; the
    rest share a few longer shapes.
    """
    smaller = tuple(b for b in (384, 512, 1024, 2048, 4096) if b < max_prompt_tokens)
    return (*smaller, max_prompt_tokens)


def jax_memory_fraction(options: TriageOptions) -> float:
    """Accelerator memory per model process. JAX preallocates 75% of the device in every
    process by default, so two processes holding a model would run out: split 80% among them.

    Without --large_model the triage and apology stages share one model per worker process
    (one SDK process per GPU worker: see the README's Dataflow section). With it, Beam loads
    each handler's model in its own processes, `model_copies` of them per handler.
    """
    if options.jax_memory_fraction is not None:
        return options.jax_memory_fraction
    processes = (options.model_copies or 1) * (2 if options.large_model else 1)
    return round(0.8 / processes, 3)


def handlers_from_options(options: TriageOptions) -> tuple[ModelHandler, ModelHandler]:
    """The triage and apology handlers: one preset, two token budgets."""
    from handlers.gemma import GemmaModelHandler

    length_buckets = length_buckets_for(options.max_prompt_tokens)
    shared = {
        "dtype": options.dtype,
        "min_batch_size": options.min_batch_size,
        "max_batch_size": options.max_batch_size,
        "large_model": options.large_model,
        "length_buckets": length_buckets,
        "max_batch_tokens": options.max_batch_tokens,
        "warm_up": options.warm_up,
    }
    if options.max_batch_duration_secs is not None:
        # Streaming: Beam groups prompts of similar length into the same batch, so a short
        # chat is not padded to a long one's length. Boundaries in characters (~3 per token).
        shared["max_batch_duration_secs"] = options.max_batch_duration_secs
        shared["batch_length_fn"] = len
        shared["batch_bucket_boundaries"] = [3 * b for b in length_buckets[:-1]]
    if options.model_copies is not None:
        shared["model_copies"] = options.model_copies
    shared["env_vars"] = {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{jax_memory_fraction(options):.3f}"}
    # Budgets sized from the replies the prompts ask for, unless set on the command line.
    triage_budget = options.max_new_tokens or max(
        load_template("triage", _version(options, "triage")).max_reply_tokens,
        load_template("repair", _version(options, "repair")).max_reply_tokens,
    )
    apology_budget = (
        options.apology_max_new_tokens
        or load_template("apology", _version(options, "apology")).max_reply_tokens
    )
    # Triage and repair replies are both triage objects: with constrained decoding the model
    # cannot write anything else. Drafts are free text for agents to edit, without digits.
    triage_constraint, draft_constraint = decoding_constraints(options.constrained_decoding)
    return (
        GemmaModelHandler(
            options.model_preset, max_new_tokens=triage_budget, **triage_constraint, **shared
        ),
        GemmaModelHandler(
            options.model_preset, max_new_tokens=apology_budget, **draft_constraint, **shared
        ),
    )


def _version(options: TriageOptions, name: str) -> str | None:
    """--<name>_prompt_version, else the version the preset was trained on, else the newest."""
    asked = getattr(options, f"{name}_prompt_version")
    return prompt_version(name, asked, options.model_preset)


def similar_settings(options: TriageOptions) -> Any:
    """Retrieval settings from `--vector_store` and friends; None when no store is given."""
    if not options.vector_store:
        return None
    from triage.retrieval.embedders import embedding_width
    from triage.retrieval.similar import SimilarSettings

    return SimilarSettings(
        uri=options.vector_store,
        dim=embedding_width(options.embedding_model, options.embedding_dim),
        collection=options.vector_collection,
        embedding_model=options.embedding_model,
        limit=options.similar_cases,
    )


def build_pipeline(
    pipeline: beam.Pipeline,
    source: beam.PTransform,
    sink: beam.PTransform,
    options: TriageOptions,
    handlers: tuple[ModelHandler, ModelHandler] | None = None,
    token_counter: TokenCounterFactory | None = None,
) -> TriageOutputs:
    """Wire source -> TriageChats -> sink. Handlers default to Gemma on `--model_preset`."""
    from handlers.gemma import load_token_counter

    triage_handler, apology_handler = handlers or handlers_from_options(options)
    counter = token_counter or functools.partial(load_token_counter, options.model_preset)
    outputs = (
        pipeline
        | "Read" >> source
        | "Triage"
        >> TriageChats(
            triage_handler,
            apology_handler,
            model_id=options.model_preset,
            triage_prompt_version=_version(options, "triage"),
            apology_prompt_version=_version(options, "apology"),
            max_prompt_tokens=options.max_prompt_tokens,
            token_counter=counter,
            repair_attempts=options.repair_attempts,
            repair_prompt_version=_version(options, "repair"),
            similar=similar_settings(options),
        )
    )
    _ = outputs | "Write" >> sink
    return outputs


def streaming_pipeline(
    options: TriageOptions,
    *,
    handlers: tuple[ModelHandler, ModelHandler] | None = None,
    token_counter: TokenCounterFactory | None = None,
    max_wait_secs: float = 2.0,
) -> beam.Pipeline:
    """The service: Pub/Sub in, BigQuery and Pub/Sub out, named by the options' I/O flags."""
    from apache_beam.options.pipeline_options import StandardOptions

    from triage.sinks import WriteToGcp
    from triage.sources import ReadFromSubscription

    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        ReadFromSubscription(options.input_subscription),
        WriteToGcp(
            summaries_table=options.summaries_table,
            dead_letter_table=options.dead_letter_table,
            drafts_topic=options.drafts_topic,
            retry_secs=options.write_retry_secs,
            max_wait_secs=max_wait_secs,
            blobs=options.dead_letter_blobs,
        ),
        options,
        handlers=handlers,
        token_counter=token_counter,
    )
    return pipeline
