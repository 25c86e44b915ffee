"""The `triage` command.

Subcommands import what they need when they run, so `triage parse-reply` starts in well under a
second instead of waiting for Beam, keras and JAX.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

__all__ = ["configure_logging", "direct_runner_refusal", "main", "parse_reply_lines"]


def configure_logging(verbose: bool) -> None:
    """Structured, quiet by default: one line per event, warnings and up unless -v."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow is used only by keras-hub's tokenizers; its oneDNN notice is noise here.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format='{"time": "%(asctime)s", "level": "%(levelname)s", "logger": "%(name)s", '
        '"message": %(message_json)s}',
    )
    factory = logging.getLogRecordFactory()

    def record_factory(*args, **kwargs):
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the program
            message = str(record.msg)
        record.message_json = json.dumps(message, ensure_ascii=False)
        return record

    logging.setLogRecordFactory(record_factory)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_known_noise)
    if not verbose:
        for noisy in ("apache_beam", "absl", "jax", "tensorflow"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


_NOISE = ("Resource module is not available",)


def _drop_known_noise(record: logging.LogRecord) -> bool:
    """Beam warns once per bundle that it cannot read memory usage here; that helps no one."""
    return not str(record.msg).startswith(_NOISE)


def parse_reply_lines(lines: TextIO, out: TextIO) -> int:
    """`{"reply": "..."}` per line in, one verdict per line out. Returns the number of inputs."""
    from triage.parse import ParseFailure, parse_reply

    n = 0
    for line in lines:
        if not line.strip():
            continue
        n += 1
        try:
            reply = json.loads(line)["reply"]
            if reply is not None and not isinstance(reply, str):
                raise TypeError("'reply' must be a string")
        except (ValueError, KeyError, TypeError) as err:
            verdict = {"ok": False, "error": f"bad input line: {err}"}
        else:
            parsed = parse_reply(reply)
            if isinstance(parsed, ParseFailure):
                verdict = {"ok": False, "error": f"{parsed.reason}: {parsed.detail}"}
            else:
                verdict = {"ok": True, "sentiment": parsed.sentiment, "summary": parsed.summary}
        out.write(json.dumps(verdict, ensure_ascii=False) + "\n")
        out.flush()
    return n


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if args.input is None:
        return _run_streaming(beam_args)
    if args.output_dir is None:
        print("triage run: --input needs --output-dir", file=sys.stderr)
        return 2
    import apache_beam as beam

    from triage.options import TriageOptions
    from triage.pipeline import build_pipeline
    from triage.sinks import OUTPUT_FILES, WriteJsonLines
    from triage.sources import ReadJsonLines, count_lines

    if not os.path.exists(args.input):
        print(f"triage run: no such input file: {args.input}", file=sys.stderr)
        return 2
    os.makedirs(args.output_dir, exist_ok=True)
    options = TriageOptions(beam_args, save_main_session=False)
    print(
        f"triage run: {args.input} -> {args.output_dir}/ with model {options.model_preset}",
        file=sys.stderr,
    )
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(
            pipeline, ReadJsonLines(args.input), WriteJsonLines(args.output_dir), options
        )
    counts = {}
    for name, filename in OUTPUT_FILES.items():
        with open(os.path.join(args.output_dir, filename), encoding="utf-8") as f:
            counts[name] = sum(1 for line in f if line.strip())
    lines, blank = count_lines(args.input)
    print(
        f"triage run: {lines} lines read -> {counts['summaries']} summaries, "
        f"{counts['drafts']} drafts, {counts['dead_letters']} dead letters, "
        f"{blank} blank lines skipped",
        file=sys.stderr,
    )
    missing = lines - blank - sum(counts.values())
    if missing:  # every line is an output or a skipped blank one; anything else is a bug
        print(f"triage run: {missing} lines have no outcome", file=sys.stderr)
        return 1
    return 0


# Subcommands whose flags live in their own module.
_DELEGATED = {
    "finetune": ("triage.finetune", "main"),
    "eval": ("triage.evaluate", "main"),
    "replay": ("triage.replay", "main_replay"),
    "dead-letters": ("triage.replay", "main_dead_letters"),
    "review": ("review.cli", "main_review"),
    "review-user": ("review.cli", "main_review_user"),
    "export-approved": ("review.cli", "main_export_approved"),
    "dataflow-job": ("triage.dataflow_job", "main"),
    "import-gguf": ("handlers.gguf_preset", "main"),
    "merge-adapter": ("triage.finetune", "main_merge"),
    "index": ("triage.retrieval.index", "main"),
    "embed-eval": ("triage.retrieval.embed_eval", "main"),
}

_STREAMING_FLAGS = ("input_subscription", "summaries_table", "dead_letter_table", "drafts_topic")


def direct_runner_refusal(runner: str, allowed: bool) -> str | None:
    """Why a streaming run must not start, or None. Beam's DirectRunner acknowledges a Pub/Sub
    message as soon as it pulls it, so whatever is in flight when the process dies is gone
    from the subscription and never reaches a sink. On the emulator that is a demo; on a real
    subscription it loses customers' chats."""
    if "Direct" not in runner or allowed or os.environ.get("PUBSUB_EMULATOR_HOST"):
        return None
    return (
        "refusing to read a real Pub/Sub subscription with the DirectRunner: it acks each "
        "message on pull, so a crash or restart loses the chats in flight. Run on Dataflow "
        "(--runner=DataflowRunner), use the emulator (PUBSUB_EMULATOR_HOST), or pass "
        "--allow_direct_runner_pubsub to accept that loss."
    )


def _run_streaming(beam_args: list[str]) -> int:
    """Pub/Sub in, BigQuery and Pub/Sub out, until cancelled (Ctrl-C here, or on Dataflow)."""
    from apache_beam.options.pipeline_options import StandardOptions

    from triage.options import TriageOptions
    from triage.pipeline import streaming_pipeline

    options = TriageOptions(beam_args, save_main_session=False)
    missing = [f"--{name}" for name in _STREAMING_FLAGS if not getattr(options, name)]
    if missing:
        print(
            f"triage run: streaming mode needs {', '.join(missing)} (or use --input FILE)",
            file=sys.stderr,
        )
        return 2
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    refusal = direct_runner_refusal(runner, options.allow_direct_runner_pubsub)
    if refusal:
        print(f"triage run: {refusal}", file=sys.stderr)
        return 2
    pipeline = streaming_pipeline(options)
    print(f"triage run: streaming from {options.input_subscription}", file=sys.stderr)
    result = pipeline.run()
    if "Dataflow" in runner:  # submitted: the job runs on Dataflow, not in this process
        print(f"triage run: submitted Dataflow job {getattr(result, 'job_id', lambda: '?')()}")
        return 0
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        result.cancel()
    return 0


def _infra(args: argparse.Namespace) -> int:
    from triage.gcp import Infrastructure, ensure_infrastructure

    infra = Infrastructure.named(args.project, dataset=args.dataset, prefix=args.prefix)
    ensure_infrastructure(infra)
    print(
        "triage infra: ready. Run the pipeline with:\n"
        f"  --input_subscription={infra.input_subscription}\n"
        f"  --summaries_table={infra.summaries_table}\n"
        f"  --dead_letter_table={infra.dead_letter_table}\n"
        f"  --drafts_topic={infra.drafts_topic}\n"
        f"Publish chats to {infra.input_topic}. Agents review drafts with:\n"
        f"  triage review --project {args.project} --prefix '{args.prefix}' --users FILE\n"
        f"(drafts from {infra.review_subscription}; decisions to {infra.reviews_table}; "
        f"approved replies to {infra.approved_topic}). Index them as similar cases with:\n"
        f"  triage index --approved_subscription {infra.approved_index_subscription} "
        "--vector_store FILE_OR_URI"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage", description="Customer-chat triage with Gemma.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the pipeline: file mode (--input) or streaming from Pub/Sub",
        description="File mode: --input FILE --output-dir DIR. Streaming mode: "
        "--input_subscription, --summaries_table, --dead_letter_table, --drafts_topic. Any other "
        "flag is a pipeline option (--model_preset, --max_new_tokens, --runner, ...): see "
        "triage/options.py.",
    )
    run.add_argument("--input", help="JSON lines, one raw message per line (file mode)")
    run.add_argument("--output-dir", help="where the three .jsonl files go (file mode)")

    infra = sub.add_parser(
        "infra",
        help="create topics, subscriptions, dataset and tables (idempotent)",
        description="Against the emulators when PUBSUB_EMULATOR_HOST and "
        "BIGQUERY_EMULATOR_HOST are set, otherwise against the real project.",
    )
    infra.add_argument("--project", required=True)
    infra.add_argument("--dataset", default="triage")
    infra.add_argument("--prefix", default="", help="prefix for every resource name")

    sub.add_parser(
        "parse-reply",
        help='why a model reply was (not) accepted: JSON lines {"reply": ...} on stdin',
    )

    sub.add_parser(
        "finetune",
        add_help=False,
        help="fine-tune a Gemma preset on triage examples and approved drafts (--help for more)",
    )
    sub.add_parser(
        "eval",
        add_help=False,
        help="parse share, sentiment accuracy and drafts of a preset on labelled chats",
    )

    sub.add_parser(
        "replay",
        add_help=False,
        help="republish (or rewrite) dead letters, once each, up to an attempt cap",
    )
    sub.add_parser(
        "dead-letters", add_help=False, help="recent dead letters grouped by stage and reason"
    )
    sub.add_parser(
        "review", add_help=False, help="serve the web app where agents review apology drafts"
    )
    sub.add_parser(
        "review-user", add_help=False, help="print a reviewer's line for the --users file"
    )
    sub.add_parser(
        "dataflow-job",
        add_help=False,
        help="the Dataflow job description for given options, built offline, not submitted",
    )
    sub.add_parser(
        "import-gguf",
        add_help=False,
        help="convert a Gemma 3 GGUF file into a keras-hub preset directory",
    )
    sub.add_parser(
        "merge-adapter",
        add_help=False,
        help="base preset + a LoRA adapter from triage finetune -> a plain preset",
    )
    sub.add_parser(
        "export-approved",
        add_help=False,
        help="approved replies as JSON lines for triage finetune",
    )
    sub.add_parser(
        "index",
        add_help=False,
        help="embed knowledge articles and resolved cases into the vector store",
    )
    sub.add_parser(
        "embed-eval",
        add_help=False,
        help="retrieval quality, speed and index size of embedding models, per language",
    )

    args, rest = parser.parse_known_args(argv)
    if args.command in _DELEGATED:
        configure_logging(args.verbose)
        module_name, function = _DELEGATED[args.command]
        module = __import__(module_name, fromlist=[function])
        return getattr(module, function)(rest)
    if args.command != "run" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    configure_logging(args.verbose)
    if args.command == "parse-reply":
        parse_reply_lines(sys.stdin, sys.stdout)
        return 0
    if args.command == "infra":
        return _infra(args)
    return _run(args, rest)


if __name__ == "__main__":
    sys.exit(main())
