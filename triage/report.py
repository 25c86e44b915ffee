"""A readable report of a file-mode run: counts per outcome, a few rows of each, dead letters.

Usage::

    python -m triage.report out/demo
"""

from __future__ import annotations

import collections
import sys
import textwrap
from pathlib import Path

from triage.records import DeadLetter, Draft, TriageResult, from_json
from triage.sinks import OUTPUT_FILES

__all__ = ["render_report"]

_TYPES = {"summaries": TriageResult, "drafts": Draft, "dead_letters": DeadLetter}


def _short(text: str | None, width: int = 90) -> str:
    flat = " ".join((text or "").split())
    return textwrap.shorten(flat, width=width, placeholder=" …") if flat else "(empty)"


def render_report(out_dir: str | Path, examples: int = 3) -> str:
    out = Path(out_dir)
    records = {
        name: [
            from_json(_TYPES[name], line)
            for line in (out / filename).read_text("utf-8").splitlines()
            if line.strip()
        ]
        for name, filename in OUTPUT_FILES.items()
    }
    total = sum(len(rows) for rows in records.values())
    lines = [
        f"chat-triage report for {out}/",
        f"  {total} chats: {len(records['summaries'])} summaries, "
        f"{len(records['drafts'])} drafts, {len(records['dead_letters'])} dead letters",
        "",
        "Summaries (sentiment 1 satisfied, 0 neutral):",
    ]
    for row in records["summaries"][:examples]:
        lines.append(f"  [{row.chat_id}] {row.sentiment:+d} {_short(row.summary)}")
    lines += ["", "Drafts awaiting review (sentiment -1):"]
    for row in records["drafts"][:examples]:
        lines.append(f"  [{row.chat_id}] {_short(row.summary, 60)}")
        lines.append(f"      draft: {_short(row.draft)}")
    lines += ["", "Dead letters by stage and reason:"]
    groups = collections.Counter((d.stage, d.reason) for d in records["dead_letters"])
    for (stage, reason), n in groups.most_common():
        lines.append(f"  {n:4d}  {stage:18s} {reason}")
    if records["dead_letters"]:
        lines += ["", "Examples:"]
        for d in records["dead_letters"][:examples]:
            reply = f" | reply: {_short(d.model_reply, 40)}" if d.model_reply else ""
            where = f"[{d.chat_id or '-'}] {d.stage}/{d.reason}"
            lines.append(f"  {where}: {_short(d.detail, 60)}{reply}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m triage.report OUT_DIR", file=sys.stderr)
        return 2
    print(render_report(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
