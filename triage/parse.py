"""Model reply -> (sentiment, summary) or a reason: lenient about form, strict about content.

Self-hosted models wrap JSON in code fences, add preambles, echo the prompt, use Python quoting
or trailing commas. All of that is accepted. What is never accepted is a value we would have to
guess: a missing, null or out-of-range field, an empty or over-long summary, a truncated object,
a refusal. A wrong accept writes a false row to the summaries table; a reject only costs a
dead letter that can be replayed.

Pure and fast to import: `triage parse-reply` loads only this module.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

import json5

from triage.prompts import CHAT_CLOSE, MODEL_TURN

__all__ = [
    "CONSTRAINED_REPLY_CHARS",
    "DRAFT_MAX_CHARS",
    "DRAFT_REGEX",
    "MAX_REPLY_CHARS",
    "MAX_SUMMARY_CHARS",
    "REPLY_SCHEMA",
    "REPLY_SCHEMA_SUMMARY_FIRST",
    "reply_regex",
    "decoding_constraints",
    "ParseFailure",
    "ParsedReply",
    "parse_reply",
]

MAX_SUMMARY_CHARS = 512
# The triage reply as a JSON schema, for constrained decoding (handlers/token_automaton.py):
# every string it admits must parse here. So the summary's first character is neither
# whitespace nor an escape that decodes to whitespace (a blank summary is rejected below), and
# `\u` escapes are left out (they could spell a lone surrogate). The length bound is not in the
# schema, where it would multiply the automaton's states: see CONSTRAINED_REPLY_CHARS.
_JSON_CHAR = r'[^"\\\x00-\x1F\x7F-\x9F]|\\["\\/bfnrt]'
_FIRST_CHAR = r'[^"\\\s\x00-\x1F\x7F-\x9F]|\\["\\/]'
REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": [-1, 0, 1]},
        "summary": {"type": "string", "pattern": f"^(?:{_FIRST_CHAR})(?:{_JSON_CHAR})*$"},
    },
    "required": ["sentiment", "summary"],
    "additionalProperties": False,
}
# The summary may come first: a model that writes what happened before it rates the customer
# decides the label after reading its own account of the chat's end (the triage model is
# trained so). Constrained decoding admits both key orders; the parser never cared.
REPLY_SCHEMA_SUMMARY_FIRST: dict[str, Any] = {
    **REPLY_SCHEMA,
    "properties": {k: REPLY_SCHEMA["properties"][k] for k in ("summary", "sentiment")},
}


def reply_regex() -> str:
    """The constrained-decoding regex of a triage reply: either key order."""
    from handlers.token_automaton import regex_for_schema

    return "|".join(
        f"(?:{regex_for_schema(schema)})" for schema in (REPLY_SCHEMA, REPLY_SCHEMA_SUMMARY_FIRST)
    )


# Characters a constrained reply may have: the shortest reply with an empty summary plus
# MAX_SUMMARY_CHARS. The raw (escaped) summary is never shorter than the decoded one, so a reply
# within this cap always has a summary within MAX_SUMMARY_CHARS.
CONSTRAINED_REPLY_CHARS = MAX_SUMMARY_CHARS + len('{"sentiment":0,"summary":""}')

# Apology drafts are free text, constrained to contain no digit (any script's decimal digits,
# and number forms such as ⅔, ², ①): a draft may not state an order id, amount, time or date,
# since the model could invent one and an agent might send it unchecked; the agent adds the
# real numbers while editing. Nor may a draft hold invisible format characters (bidi overrides
# such as U+202D, zero-width joiners: they can disguise text on the agent's screen), control
# characters other than the line break, private-use characters, or the braces, brackets,
# backslash, angle brackets and bar of JSON, code and markup: a reply to a customer needs none,
# and a model that starts copying a pasted error object into a draft otherwise loops on them.
DRAFT_FORBIDDEN = r"\d\p{No}\p{Cf}\p{Co}\x00-\x09\x0B-\x1F\x7F{}\[\]\\<>|"
DRAFT_REGEX = rf"[^{DRAFT_FORBIDDEN}\s][^{DRAFT_FORBIDDEN}]*"
DRAFT_MAX_CHARS = 1200


def decoding_constraints(constrained: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """GemmaModelHandler arguments of the triage and the apology stage: with constrained
    decoding, triage replies match REPLY_SCHEMA and drafts DRAFT_REGEX; without, free text."""
    if not constrained:
        return {}, {}
    return (
        {"reply_schema": reply_regex(), "max_reply_chars": CONSTRAINED_REPLY_CHARS},
        {"reply_schema": DRAFT_REGEX, "max_reply_chars": DRAFT_MAX_CHARS},
    )


# Replies are bounded by the token budget; anything far larger is not a reply to our prompt.
MAX_REPLY_CHARS = 32 * 1024
# Opening braces examined before giving up: with the reply cap, bounds the scan to ~1M steps.
_MAX_CANDIDATES = 32

_SENTIMENT_WORDS = {
    "positive": 1,
    "satisfied": 1,
    "neutral": 0,
    "negative": -1,
    "dissatisfied": -1,
}
_NUMBER = re.compile(r"^[+-]?\d+(\.0*)?$")
_REFUSAL = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry\b|i (can ?not|can't|cannot|am unable|won't|will not)\b|"
    r"as an ai\b|i'?m unable\b|i am not able\b|i'?m not able\b)",
    re.IGNORECASE,
)


def _is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text.replace("\u2019", "'").replace("\u2018", "'")))


@dataclass(frozen=True)
class ParsedReply:
    sentiment: int
    summary: str


@dataclass(frozen=True)
class ParseFailure:
    """`reason` is a stable code for grouping dead letters; `detail` says what was seen."""

    reason: str
    detail: str


def _balanced_spans(text: str) -> tuple[list[str], bool]:
    """Every balanced `{...}` substring, in order of its opening brace.

    Braces inside single- or double-quoted strings do not count. Also reports whether some
    object was left open at the end of the text (a truncated reply).
    """
    spans: list[str] = []
    truncated = False
    start = text.find("{")
    tried = 0
    while start != -1 and tried < _MAX_CANDIDATES:
        tried += 1
        depth = 0
        quote: str | None = None
        escaped = False
        end = -1
        for i in range(start, len(text)):
            ch = text[i]
            if quote:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end == -1:
            truncated = True
        else:
            spans.append(text[start : end + 1])
        start = text.find("{", start + 1)
    return spans, truncated


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(f"duplicate keys in {keys!r}")
    return dict(pairs)


def _python_literal(span: str) -> Any:
    tree = ast.parse(span, mode="eval")
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = [ast.literal_eval(k) for k in node.keys if k is not None]
            if len(set(map(repr, keys))) != len(keys):
                raise _DuplicateKey(f"duplicate keys in {keys!r}")
    return ast.literal_eval(tree)


def _decode(span: str) -> Any:
    """Strict JSON first, then JSON5 (single quotes, trailing commas), then a Python literal.

    A repeated key makes the object ambiguous: `_DuplicateKey` is raised, never a guess.
    """
    decoders = (
        lambda t: json.loads(t, object_pairs_hook=_unique_pairs),
        lambda t: json5.loads(t, object_pairs_hook=_unique_pairs),
        _python_literal,
    )
    for loads in decoders:
        try:
            return loads(span)
        except _DuplicateKey:
            raise
        except Exception:  # noqa: BLE001 - each decoder raises its own family of errors
            continue
    return None


def _field(obj: dict[Any, Any], name: str) -> tuple[bool, Any]:
    if name in obj:
        return True, obj[name]
    matches = [k for k in obj if isinstance(k, str) and k.strip().lower() == name]
    if len(matches) == 1:
        return True, obj[matches[0]]
    return False, None


def _sentiment(value: Any) -> int | ParseFailure:
    if value is None:
        return ParseFailure("null_sentiment", "sentiment is null")
    if isinstance(value, bool):
        return ParseFailure("invalid_sentiment", f"sentiment is a boolean ({value})")
    if isinstance(value, float):
        if not value.is_integer():
            return ParseFailure("invalid_sentiment", f"sentiment {value} is not -1, 0 or 1")
        value = int(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _SENTIMENT_WORDS:
            return _SENTIMENT_WORDS[word]
        if not _NUMBER.match(word):
            return ParseFailure("invalid_sentiment", f"sentiment {value[:40]!r} is not -1, 0 or 1")
        digits = word.lstrip("+-").split(".")[0].lstrip("0")
        if len(digits) > 1:  # never hand a 400-digit string to int()
            return ParseFailure("sentiment_out_of_range", f"sentiment {value[:40]!r} is too large")
        value = int(word.split(".")[0])
    if not isinstance(value, int):
        return ParseFailure("invalid_sentiment", f"sentiment is a {type(value).__name__}")
    if value not in (-1, 0, 1):
        return ParseFailure("sentiment_out_of_range", f"sentiment {value} is not -1, 0 or 1")
    return value


def _summary(value: Any) -> str | ParseFailure:
    if value is None:
        return ParseFailure("null_summary", "summary is null")
    if not isinstance(value, str):
        return ParseFailure("invalid_summary", f"summary is a {type(value).__name__}, not a string")
    summary = value.strip()
    try:
        summary.encode("utf-8")
    except UnicodeEncodeError:
        return ParseFailure("invalid_summary", "summary contains invalid unicode")
    if not summary:
        return ParseFailure("empty_summary", "summary is empty")
    if len(summary) > MAX_SUMMARY_CHARS:
        return ParseFailure(
            "summary_too_long",
            f"summary has {len(summary)} characters, at most {MAX_SUMMARY_CHARS}",
        )
    if _is_refusal(summary):
        return ParseFailure("refusal", f"summary is a refusal: {summary[:80]!r}")
    return summary


def _duplicate_if_relevant(span: str, err: _DuplicateKey) -> ParseFailure | None:
    """A repeated answer key is ambiguous (reject); a repeated unrelated key is not our object."""
    if re.search(r"""["']?\s*(sentiment|summary)\s*["']?\s*:""", span, re.IGNORECASE):
        return ParseFailure("duplicate_field", f"{err}")
    return None


def _strip_echo(text: str, prompt: str | None) -> str:
    """Drop an echoed prompt so objects quoted inside it (even forged ones) are never read."""
    if prompt and prompt in text:
        text = text[text.rindex(prompt) + len(prompt) :]
    for marker in (MODEL_TURN, CHAT_CLOSE):
        if marker in text:
            text = text[text.rindex(marker) + len(marker) :]
    return text


def parse_reply(reply: str | None, prompt: str | None = None) -> ParsedReply | ParseFailure:
    """Parse one model reply. Never raises.

    Args:
      reply: the model's completion (or the whole generated text, echoed prompt included).
      prompt: the prompt that produced it, when known; an exact echo of it is skipped.
    """
    if reply is None or not reply.strip():
        return ParseFailure("empty_reply", "the model returned no text")
    if len(reply) > MAX_REPLY_CHARS:
        return ParseFailure("reply_too_long", f"{len(reply)} characters")
    text = _strip_echo(reply, prompt)

    spans, truncated = _balanced_spans(text)
    incomplete: str | None = None
    for span in spans:
        try:
            obj = _decode(span)
        except _DuplicateKey as err:
            obj = _duplicate_if_relevant(span, err)
            if isinstance(obj, ParseFailure):
                return obj
        if not isinstance(obj, dict):
            continue
        has_sentiment, sentiment = _field(obj, "sentiment")
        has_summary, summary = _field(obj, "summary")
        if not (has_sentiment and has_summary):
            if has_sentiment or has_summary:
                missing = "summary" if has_sentiment else "sentiment"
                incomplete = incomplete or missing
            continue
        parsed_sentiment = _sentiment(sentiment)
        if isinstance(parsed_sentiment, ParseFailure):
            return parsed_sentiment
        parsed_summary = _summary(summary)
        if isinstance(parsed_summary, ParseFailure):
            return parsed_summary
        return ParsedReply(parsed_sentiment, parsed_summary)

    snippet = text.strip()[:80]
    if incomplete:
        return ParseFailure(f"missing_{incomplete}", f"no object has both fields; {snippet!r}")
    if truncated:
        return ParseFailure("truncated_json", f"a JSON object is not closed: {snippet!r}")
    if _is_refusal(text):
        return ParseFailure("refusal", f"the model refused: {snippet!r}")
    return ParseFailure("no_json_object", f"no JSON object in the reply: {snippet!r}")
