"""What the vector store holds: knowledge articles and resolved cases, as chunks to embed.

A knowledge article is a Markdown page with a front matter (`id`, `title`, `language`,
`trade`, `topic`, `remedy`); a resolved case is a chat with the reply an agent approved
(`examples/resolved_cases_*.jsonl`, or the review queue's approved rows). Chunk ids derive
from the document id and the chunk's place, so indexing the same document again overwrites
its chunks instead of adding copies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CHUNK_CHARS",
    "Document",
    "case_document",
    "chunk_document",
    "read_articles",
    "read_cases",
    "read_documents",
]

CHUNK_CHARS = 1200  # about 300 tokens: a policy section, or a short chat with its reply
_FRONT = re.compile(r"\A---\n(.*?)\n---\n(.*)\Z", re.S)


@dataclass(frozen=True)
class Document:
    """One article or one resolved case; `remedy` is what its policy or agent prescribed."""

    doc_id: str
    kind: str  # "article" | "case"
    language: str
    topic: str
    title: str
    text: str
    remedy: str = ""
    reply: str = ""  # a case's approved reply
    extra: dict[str, Any] = field(default_factory=dict)


def read_articles(folder: str | Path) -> list[Document]:
    """Every `*.md` under `folder` (any depth): one document each."""
    docs = []
    for path in sorted(Path(folder).rglob("*.md")):
        match = _FRONT.match(path.read_text(encoding="utf-8"))
        if not match:
            raise ValueError(f"{path}: no front matter (--- id: ... ---)")
        head = yaml.safe_load(match.group(1)) or {}
        missing = {"id", "language", "topic", "title"} - set(head)
        if missing:
            raise ValueError(f"{path}: front matter lacks {sorted(missing)}")
        docs.append(
            Document(
                doc_id=str(head["id"]),
                kind="article",
                language=str(head["language"]),
                topic=str(head["topic"]),
                title=str(head["title"]),
                text=match.group(2).strip(),
                remedy=str(head.get("remedy", "")),
                extra={"trade": str(head.get("trade", "")), "source": str(path)},
            )
        )
    return docs


def case_document(row: Mapping[str, Any]) -> Document:
    """One resolved case from a row: `id` or `draft_id` (else the draft id the pipeline gives
    a chat, `CHAT_ID/draft`), `chat_message`, `approved_reply` (or `draft`, as `triage
    export-approved` writes it), with `language`, `topic`, `remedy` when known. Every source
    of cases (files, the `reviews` table, the `approved` topic) goes through here, so one
    approval gets one id wherever it was read: indexing it again overwrites it."""
    doc_id = row.get("id") or row.get("draft_id")
    if not doc_id and row.get("chat_id"):
        doc_id = f"{row['chat_id']}/draft"
    if not doc_id:
        raise ValueError("a resolved case needs an id, a draft_id or a chat_id")
    chat = row.get("chat_message")
    if not isinstance(chat, str) or not chat.strip():
        raise ValueError(f"case {doc_id}: no chat_message")
    reply = row.get("approved_reply") or row.get("draft") or ""
    return Document(
        doc_id=str(doc_id),
        kind="case",
        language=str(row.get("language") or ""),
        topic=str(row.get("topic") or ""),
        title=str(row.get("summary") or row.get("topic") or ""),
        text=chat,
        remedy=str(row.get("remedy") or ""),
        reply=str(reply),
    )


def read_cases(paths: Iterable[str | Path]) -> list[Document]:
    """Resolved cases from JSON lines, one `case_document` row a line."""
    docs = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(case_document(json.loads(line)))
            except ValueError as err:
                raise ValueError(f"{path}:{number}: {err}") from err
    return docs


def read_documents(articles: str | Path | None, cases: Iterable[str | Path] = ()) -> list[Document]:
    return (read_articles(articles) if articles else []) + read_cases(cases)


def _pieces(text: str, limit: int) -> Iterator[str]:
    """Paragraphs packed up to `limit` characters; a longer paragraph is cut at the limit."""
    current = ""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        while len(paragraph) > limit:
            if current:
                yield current
                current = ""
            yield paragraph[:limit]
            paragraph = paragraph[limit:]
        if current and len(current) + 2 + len(paragraph) > limit:
            yield current
            current = ""
        current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        yield current


def chunk_document(doc: Document, limit: int = CHUNK_CHARS) -> list[Any]:
    """Beam `Chunk`s (`apache_beam.ml.rag.types`) for one document: an article's title leads
    each of its chunks; a case is its chat and approved reply, in one chunk where they fit."""
    from apache_beam.ml.rag.types import Chunk, Content

    if doc.kind == "case":
        body = f"{doc.text}\n\nApproved reply: {doc.reply}" if doc.reply else doc.text
        texts = list(_pieces(body, limit))
    else:
        texts = [
            f"{doc.title}\n\n{piece}" for piece in _pieces(doc.text, limit - len(doc.title) - 2)
        ]
    metadata = {
        "doc_id": doc.doc_id,
        "kind": doc.kind,
        "language": doc.language,
        "topic": doc.topic,
        "title": doc.title,
        "remedy": doc.remedy,
        "reply": doc.reply,
    }
    return [
        Chunk(
            content=Content(text=text),
            id=f"{doc.doc_id}#{index}",
            index=index,
            metadata={**metadata, "chunks": len(texts)},
        )
        for index, text in enumerate(texts)
    ]
