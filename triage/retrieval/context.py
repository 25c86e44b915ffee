"""What retrieval hands the apology prompt and the draft record (no Beam, no store client)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CONTEXT_CHARS", "Similar", "context_for_prompt", "draft_languages"]

CONTEXT_CHARS = 500  # per retrieved item in the prompt: its remedy and reply, not whole pages


@dataclass(frozen=True)
class Similar:
    """One retrieved document: a knowledge article or a resolved case."""

    doc_id: str
    kind: str
    score: float
    title: str = ""
    remedy: str = ""
    reply: str = ""
    language: str = ""
    text: str = ""


def context_for_prompt(similar: Sequence[Similar] | None) -> str:
    """The retrieved items as the apology prompt's context: what each prescribed, and the
    reply an agent approved; `[]` when there are none."""
    items = []
    for item in similar or ():
        entry = {"kind": "policy" if item.kind == "article" else "past case", "title": item.title}
        if item.remedy:
            entry["remedy"] = item.remedy
        if item.reply:
            entry["approved_reply"] = item.reply[:CONTEXT_CHARS]
        items.append(entry)
    return json.dumps(items, ensure_ascii=False)


def draft_languages(chat: str) -> frozenset[str]:
    """The languages whose documents may go into a draft's context: the chat's, and English,
    the common language of knowledge bases. A Spanish chat shown its nearest cases in Korean
    and Japanese got a Korean draft; context in a third language derails a small model more
    than it helps."""
    from triage.draft_checks import detect_language

    return frozenset({detect_language(chat), "en"})
