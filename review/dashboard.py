"""Numbers at the top of the queue, from the `reviews` table (the truth across app instances).

One bounded query (the last 7 days of decisions) and arithmetic here, rather than SQL
aggregates, so the same code runs on BigQuery and on the local emulator.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = ["Dashboard", "RateRow", "fetch_decisions", "summarize"]

WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class RateRow:
    model_id: str
    prompt_version: str
    approved: int
    decided: int

    @property
    def rate(self) -> float:
        return self.approved / self.decided if self.decided else 0.0


@dataclass
class Dashboard:
    waiting: int = 0
    approved_today: int = 0
    rejected_today: int = 0
    median_seconds: float | None = None
    rates: list[RateRow] = field(default_factory=list)
    error: str | None = None  # BigQuery unreachable: the queue still works, the numbers wait


def fetch_decisions(client: Any, table: str, now: datetime) -> list[dict[str, Any]]:
    from google.cloud import bigquery

    job = client.query(
        f"SELECT decision, model_id, apology_prompt_version, seconds_to_decision, decided_at "
        f"FROM `{table}` WHERE decided_at >= @since",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("since", "TIMESTAMP", now - WINDOW)]
        ),
        retry=None,
        job_retry=None,
    )
    return [dict(row.items()) for row in job.result(timeout=30, retry=None)]


def summarize(rows: Iterable[dict[str, Any]], waiting: int, now: datetime) -> Dashboard:
    """Today is the UTC day of `now`; rates and the median cover the whole window."""
    board = Dashboard(waiting=waiting)
    groups: dict[tuple[str, str], list[int]] = {}
    seconds: list[float] = []
    for row in rows:
        decided = row["decided_at"]
        if isinstance(decided, str):
            decided = datetime.fromisoformat(decided.replace("Z", "+00:00"))
        approved = row["decision"] == "approved"
        if decided.date() == now.date():
            board.approved_today += approved
            board.rejected_today += not approved
        key = (row["model_id"] or "?", row["apology_prompt_version"] or "?")
        counts = groups.setdefault(key, [0, 0])
        counts[0] += approved
        counts[1] += 1
        if row["seconds_to_decision"] is not None:
            seconds.append(float(row["seconds_to_decision"]))
    board.median_seconds = statistics.median(seconds) if seconds else None
    board.rates = [RateRow(m, p, a, n) for (m, p), (a, n) in sorted(groups.items())]
    return board
