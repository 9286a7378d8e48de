"""Small builders of port dataclasses for the DynamoDB tests."""

from __future__ import annotations

from typing import Any

from workers.ports import HistoryRecord, JournalEntry


def history_record(run_id: str = "run-1", *, started_at: float = 100.0, **changes: Any) -> HistoryRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "failover": "move-checkout",
        "group": "shop/checkout",
        "mode": "CONSISTENCY",
        "source_cluster": "east",
        "target_cluster": "west",
        "force": False,
        "reason": "planned maintenance",
        "started_at": started_at,
        "finished_at": started_at + 42.5,
        "outcome": "SUCCESS",
        "downtime_seconds": 3.25,
        **changes,
    }
    return HistoryRecord(**values)


def journal_entry(run_id: str, sequence: int, *, run_json: str = '{"state": "x"}') -> JournalEntry:
    return JournalEntry(
        run_id=run_id,
        sequence=sequence,
        stage=f"stage-{sequence}",
        state="RUNNING",
        at=1000.0 + sequence,
        run_json=run_json,
    )
