"""Prompt templates: loading the versioned files in `prompts/`, and rendering untrusted text safely.

Chat text is written into the prompt as a JSON string literal with `<` and `>` escaped, between
`<chat>` and `</chat>`. Quotes, backslashes and newlines in the chat are escaped by the JSON
encoding and angle brackets become `\\u003c`/`\\u003e`, so no chat can close the string, close the
`</chat>` delimiter, or spell a Gemma control token such as `<end_of_turn>` or `<start_of_turn>`.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import string
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "CHAT_CLOSE",
    "MODEL_TURN",
    "PromptTemplate",
    "PromptTooLong",
    "Rendered",
    "TokenBudget",
    "byte_token_count",
    "load_template",
    "trained_prompt_versions",
    "quote_untrusted",
    "shorten_middle",
]

CHAT_CLOSE = "</chat>"
MODEL_TURN = "<start_of_turn>model\n"

_VERSION_FILE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<n>\d+)\.toml$")


class PromptTooLong(ValueError):
    """The instructions alone exceed the token budget: no amount of chat shortening helps."""


def quote_untrusted(text: str) -> str:
    """Encode untrusted text as an inert JSON string literal (see the module docstring)."""
    return json.dumps(text, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


def shorten_middle(text: str, keep: int) -> str:
    """Keep the first and last characters of `text` (about `keep` in all), marking the cut.

    Complaints state the problem early and the customer's last word late, so both ends matter
    more than the middle.
    """
    if keep >= len(text):
        return text
    head = (keep + 1) // 2
    tail = keep - head
    omitted = len(text) - keep
    end = text[len(text) - tail :] if tail else ""
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{end}"


def byte_token_count(text: str) -> int:
    """An upper bound on tokens for byte-fallback tokenizers (Gemma's): one token per UTF-8 byte.

    Used when no tokenizer is at hand (unit tests, tools); the pipeline counts real tokens.
    """
    return len(text.encode("utf-8")) + 1


@dataclass(frozen=True)
class TokenBudget:
    """How many prompt tokens the model may receive, and how to count them."""

    max_tokens: int
    count: Callable[[str], int] = byte_token_count


@dataclass(frozen=True)
class Rendered:
    text: str
    version: str
    omitted_chars: int
    tokens: int | None


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    template: str
    # New tokens the reply this prompt asks for needs (generation stops earlier at its end).
    max_reply_tokens: int = 256

    def _fill(self, chat: str, values: dict[str, str]) -> str:
        quoted = {k: quote_untrusted(v) for k, v in values.items()}
        return string.Template(self.template).substitute(quoted, chat=quote_untrusted(chat))

    def render(self, chat: str, budget: TokenBudget | None = None, **values: str) -> Rendered:
        """Fill the template; if over budget, shorten only the chat, never the instructions.

        Every value is untrusted (chat text, user ids, model-written summaries) and is quoted.
        Raises `PromptTooLong` when even an empty chat does not fit.
        """
        text = self._fill(chat, values)
        if budget is None:
            return Rendered(text, self.version, 0, None)
        tokens = budget.count(text)
        if tokens <= budget.max_tokens:
            return Rendered(text, self.version, 0, tokens)

        # Largest number of kept characters whose prompt fits: binary search, O(log n) counts.
        lo, hi = 0, len(chat) - 1
        best: tuple[str, int, int] | None = None
        while lo <= hi:
            mid = (lo + hi) // 2
            candidate = self._fill(shorten_middle(chat, mid), values)
            n = budget.count(candidate)
            if n <= budget.max_tokens:
                best = (candidate, n, mid)
                lo = mid + 1
            else:
                hi = mid - 1
        if best is None:
            raise PromptTooLong(
                f"{self.version}: the instructions leave no room for the chat "
                f"within {budget.max_tokens} tokens"
            )
        text, tokens, kept = best
        return Rendered(text, self.version, len(chat) - kept, tokens)


def _available() -> dict[str, dict[int, str]]:
    found: dict[str, dict[int, str]] = {}
    for entry in importlib.resources.files("prompts").iterdir():
        m = _VERSION_FILE.match(entry.name)
        if m:
            found.setdefault(m.group("name"), {})[int(m.group("n"))] = entry.name
    return found


@cache
def load_template(name: str, version: str | None = None) -> PromptTemplate:
    """Load `prompts/<name>.v<N>.toml`: the given version id (e.g. `triage-v1`) or the newest."""
    files = _available().get(name)
    if not files:
        raise KeyError(f"no prompt template named {name!r}")
    if version is None:
        filename = files[max(files)]
    else:
        m = re.fullmatch(rf"{re.escape(name)}-v([0-9]+)", version)
        if not m or int(m.group(1)) not in files:
            raise KeyError(f"no version {version!r} of prompt {name!r}")
        filename = files[int(m.group(1))]
    data = tomllib.loads(importlib.resources.files("prompts").joinpath(filename).read_text("utf-8"))
    template = PromptTemplate(
        name=data["name"],
        version=data["version"],
        template=data["template"],
        max_reply_tokens=int(data.get("max_reply_tokens", 256)),
    )
    if template.name != name:
        raise ValueError(f"{filename}: declares name {template.name!r}")
    if version is not None and template.version != version:
        raise ValueError(f"{filename}: declares version {template.version!r}, not {version!r}")
    return template


PROMPTS_FILE = "prompts.json"


def trained_prompt_versions(preset: str | None) -> dict[str, str]:
    """The prompt versions a preset was fine-tuned on, from `prompts.json` in its directory
    (e.g. `{"triage": "triage-v2", "apology": "apology-v2"}`); {} when it records none.

    A fine-tuned model answers the wording it was trained on best, so when no version is asked
    for, the pipeline uses these rather than the newest file. Remote presets (gs://, kaggle://)
    record none: pass versions explicitly for those.
    """
    if not preset or "://" in preset:
        return {}
    path = Path(preset) / PROMPTS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.items()}


def prompt_version(name: str, asked: str | None, preset: str | None) -> str | None:
    """The version to use: the one asked for, else the preset's, else None (the newest)."""
    return asked or trained_prompt_versions(preset).get(name)
