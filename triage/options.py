"""Pipeline options: the same flags on the DirectRunner and on Dataflow."""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["DEFAULT_MODEL_PRESET", "TriageOptions", "add_similar_arguments"]

# Gemma 3 270M with the committed triage LoRA adapter merged in, built by `make setup`.
DEFAULT_MODEL_PRESET = "models/triage-gemma3-270m"


class TriageOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        model = parser.add_argument_group("model")
        model.add_argument(
            "--model_preset",
            default=DEFAULT_MODEL_PRESET,
            help="keras-hub preset: local directory, gs:// path or Kaggle handle",
        )
        model.add_argument("--dtype", default=None, help="weights dtype, e.g. bfloat16 on GPUs")
        model.add_argument(
            "--max_new_tokens",
            type=int,
            default=None,
            help="new-token budget of a triage reply; default: the template's max_reply_tokens",
        )
        model.add_argument(
            "--apology_max_new_tokens",
            type=int,
            default=None,
            help="new-token budget of a draft; default: the template's max_reply_tokens",
        )
        model.add_argument(
            "--max_prompt_tokens",
            type=int,
            default=1024,
            help="prompt budget; longer chats are shortened in the middle",
        )
        model.add_argument("--triage_prompt_version", default=None, help="e.g. triage-v1")
        model.add_argument("--apology_prompt_version", default=None, help="e.g. apology-v1")
        model.add_argument(
            "--repair_attempts",
            type=int,
            default=1,
            help="repair prompts tried on a reply that does not parse, before dead-lettering",
        )
        model.add_argument("--repair_prompt_version", default=None, help="e.g. repair-v1")
        model.add_argument(
            "--no_constrained_decoding",
            dest="constrained_decoding",
            action="store_false",
            default=True,
            help="let the model write free text for triage replies instead of masking every "
            "token to the reply schema (repair then catches malformed replies)",
        )
        batching = parser.add_argument_group("batching and model sharing (Beam RunInference)")
        batching.add_argument("--min_batch_size", type=int, default=1)
        batching.add_argument("--max_batch_size", type=int, default=8)
        batching.add_argument("--max_batch_duration_secs", type=int, default=None)
        batching.add_argument(
            "--large_model",
            action="store_true",
            default=False,
            help="one model per worker machine, shared across processes",
        )
        batching.add_argument("--model_copies", type=int, default=None)
        batching.add_argument(
            "--jax_memory_fraction",
            type=float,
            default=None,
            help="share of accelerator memory each model process may take "
            "(XLA_PYTHON_CLIENT_MEM_FRACTION); default 0.8 split across the processes "
            "holding a model (model copies, x2 with --large_model: triage and apology)",
        )
        batching.add_argument(
            "--max_batch_tokens",
            type=int,
            default=None,
            help="rows x sequence length per generate call (memory bound); default by device",
        )
        batching.add_argument(
            "--no_warm_up",
            dest="warm_up",
            action="store_false",
            default=True,
            help="skip compiling every shape bucket at model load (quicker local runs)",
        )
        add_similar_arguments(parser)
        io = parser.add_argument_group("Pub/Sub and BigQuery (streaming mode)")
        io.add_argument(
            "--input_subscription", default=None, help="projects/P/subscriptions/S to read chats"
        )
        io.add_argument("--summaries_table", default=None, help="PROJECT.DATASET.TABLE")
        io.add_argument("--dead_letter_table", default=None, help="PROJECT.DATASET.TABLE")
        io.add_argument("--drafts_topic", default=None, help="projects/P/topics/T for review")
        io.add_argument(
            "--dead_letter_blobs",
            default=None,
            help="gs://BUCKET/PATH (or a local folder in demos) for the full bytes of dead "
            "letters over 64 KiB, and rows the dead-letter table refuses",
        )
        io.add_argument(
            "--allow_direct_runner_pubsub",
            action="store_true",
            help="read a real Pub/Sub subscription with the DirectRunner, which acks each "
            "message when it pulls it: a crash loses every chat in flight (refused without it)",
        )
        io.add_argument(
            "--write_retry_secs",
            type=float,
            default=120.0,
            help="how long a write is retried through transient errors before dead-lettering",
        )


def add_similar_arguments(parser: Any) -> None:
    """The retrieval flags, shared by the pipeline and `triage eval` (`similar_settings` reads
    them from either)."""
    similar = parser.add_argument_group("similar resolved cases (triage index)")
    similar.add_argument(
        "--vector_store",
        default=None,
        help="Milvus Lite file or Milvus URI that `triage index` filled; dissatisfied "
        "customers' drafts then come with the most similar resolved cases",
    )
    similar.add_argument("--vector_collection", default="similar_cases")
    similar.add_argument("--embedding_model", default="e5-small", help="as for triage index")
    similar.add_argument("--embedding_dim", type=int, default=None)
    similar.add_argument("--similar_cases", type=int, default=3, help="how many to retrieve")
