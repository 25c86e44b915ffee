"""The triage model's training set: chats written for training, plus generated ones.

`triage/training_chats/<language>.jsonl` holds support chats written one by one (by helper
agents briefed as support staff, never shown `eval/`), each with its label, the reason for it,
a summary and, for unhappy customers, an approved-style draft. They read like real support,
which the template generator (`triage.synthetic`) cannot: the first model, trained on generated
chats alone, scored 46.5% on the hand-written set. The first `--train_per_language` chats of
each file are trained on; the rest are a held-out development split (`--split dev`).

A few generated chats are mixed in for what the written ones have less of: injection attempts,
pasted JSON, speaker-label styles.

`triage/training_chats/grounded/<language>.jsonl` teaches drafts to use retrieval: unhappy
customers' chats with the policies and past cases a search returned (`similar`, as the apology
prompt shows them) and a draft that offers the fitting item's remedy, or, when nothing fits
(`fits: false`), none. Their policies and companies are invented for training; none comes from
`examples/knowledge/`, which the evaluation retrieves from. They add apology examples only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from triage.parse import MAX_SUMMARY_CHARS
from triage.synthetic import write_jsonl

__all__ = [
    "GROUNDED_DIR",
    "WRITTEN_DIR",
    "check_grounded",
    "check_written",
    "main",
    "read_grounded",
    "read_written",
    "training_records",
]

WRITTEN_DIR = Path(__file__).with_name("training_chats")
GROUNDED_DIR = WRITTEN_DIR / "grounded"
LABELS = (1, 0, -1)


def read_written(
    directory: Path = WRITTEN_DIR, split: str = "train", train_per_language: int = 100
) -> list[dict[str, Any]]:
    """The written chats of one split, in file order (train: the first N of each language)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            chats = [json.loads(line) for line in f if line.strip()]
        rows += chats[:train_per_language] if split == "train" else chats[train_per_language:]
    return rows


def check_written(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Problems that would teach the model something wrong; empty when the rows are usable."""
    problems = []
    seen: set[str] = set()
    for row in rows:
        rid = row.get("id", "?")
        if rid in seen:
            problems.append(f"{rid}: duplicate id")
        seen.add(rid)
        if row.get("sentiment") not in LABELS:
            problems.append(f"{rid}: sentiment must be 1, 0 or -1")
        if not str(row.get("chat_message", "")).strip():
            problems.append(f"{rid}: empty chat")
        if not 0 < len(row.get("summary", "")) <= MAX_SUMMARY_CHARS:
            problems.append(f"{rid}: summary empty or over {MAX_SUMMARY_CHARS} characters")
        draft = row.get("draft")
        if row.get("sentiment") == -1:
            if not draft:
                problems.append(f"{rid}: an unhappy customer's chat needs a draft")
            elif any(ch.isdigit() for ch in draft):
                problems.append(f"{rid}: a draft may not contain digits (invented facts)")
        elif draft:
            problems.append(f"{rid}: only unhappy customers get a draft")
    return problems


def read_grounded(directory: Path = GROUNDED_DIR) -> list[dict[str, Any]]:
    """The grounded drafts as apology-only records: without `sentiment` the trainer makes no
    triage example of them (they would tilt the labels towards -1)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    keep = ("id", "language", "chat_message", "summary", "similar", "fits", "draft")
    return [{k: row[k] for k in keep if k in row} for row in rows]


def check_grounded(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A grounded draft may state only numbers of the chat or of what was retrieved, and one
    whose retrieved items do not fit may offer no remedy."""
    from triage.draft_checks import invented_numbers, invented_remedies

    problems = []
    for row in rows:
        rid, draft, chat = row.get("id", "?"), str(row.get("draft", "")), row["chat_message"]
        similar = json.dumps(row.get("similar") or [], ensure_ascii=False)
        if not draft.strip() or not row.get("similar"):
            problems.append(f"{rid}: a grounded record needs a draft and what was retrieved")
        if invented_numbers(draft, f"{chat}\n{similar}"):
            problems.append(f"{rid}: a number in neither the chat nor what was retrieved")
        if row.get("fits") is False and invented_remedies(draft, chat, row.get("language", "en")):
            problems.append(f"{rid}: nothing retrieved fits, yet the draft offers a remedy")
    return problems


def training_records(
    train_per_language: int,
    synthetic_n: int,
    seed: int,
    directory: Path = WRITTEN_DIR,
    grounded: bool = False,
) -> list[dict[str, Any]]:
    """Written chats (train split), `synthetic_n` generated ones, then the grounded drafts
    when asked; the trainer shuffles."""
    from triage.synthetic import generate

    written = read_written(directory, "train", train_per_language)
    generated = generate(synthetic_n, seed=seed) if synthetic_n else []
    return written + generated + (read_grounded(directory / "grounded") if grounded else [])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m triage.training_set", description=__doc__)
    parser.add_argument("--out", required=True, help="JSON-lines file to write")
    parser.add_argument("--split", choices=("train", "dev"), default="train")
    parser.add_argument("--train_per_language", type=int, default=100)
    parser.add_argument("--synthetic_n", type=int, default=0, help="generated chats to add")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--grounded", action="store_true", help="add the drafts grounded in retrieved cases"
    )
    args = parser.parse_args(argv)
    if args.split == "train":
        rows = training_records(
            args.train_per_language, args.synthetic_n, args.seed, grounded=args.grounded
        )
    else:
        rows = read_written(WRITTEN_DIR, "dev", args.train_per_language)
    grounded = [r for r in rows if "similar" in r]
    written = [r for r in rows if not r.get("synthetic") and "similar" not in r]
    problems = check_written(written)
    problems += check_grounded(grounded)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    write_jsonl(args.out, rows)
    print(f"training_set: {len(rows)} chats ({args.split}) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
