"""Beam metrics, named once here so dashboards and tests agree on what they are called."""

from __future__ import annotations

from apache_beam.metrics import Metrics

__all__ = ["NAMESPACE", "counter", "distribution"]

NAMESPACE = "triage"

CHATS_READ = "chats_read"
CHATS_INVALID = "chats_invalid"
BLANK_LINES = "blank_lines_skipped"
PROMPTS_SHORTENED = "prompts_shortened"
SENTIMENT = {1: "sentiment_positive", 0: "sentiment_neutral", -1: "sentiment_negative"}
REPLIES_UNPARSEABLE = "replies_unparseable"
REPAIR_ATTEMPTS = "repair_attempts"
REPAIRS_SUCCEEDED = "repairs_succeeded"
INFERENCE_FAILURES = "inference_failures"
DRAFTS = "drafts"
DRAFTS_FAILED = "drafts_failed"
DEAD_LETTERS = "dead_letters"
DRAFTS_PUBLISHED = "drafts_published"
WRITE_FAILURES = "write_failures"
LAST_RESORT = "dead_letters_kept_last_resort"
INTERNAL_ERRORS = "internal_errors"
PROMPT_TOKENS = "prompt_tokens"
PROMPT_CHARS = "prompt_chars"
REPLY_CHARS = "reply_chars"
# triage index (triage.retrieval): documents chunked for the store, and approvals read (from
# the reviews table or the approved topic) and dropped as unusable.
DOCUMENTS_INDEXED = "documents_indexed"
CHUNKS_INDEXED = "chunks_indexed"
APPROVALS_READ = "approvals_read"
APPROVALS_UNUSABLE = "approvals_unusable"


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def distribution(name: str):
    return Metrics.distribution(NAMESPACE, name)
