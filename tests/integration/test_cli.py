"""failoverctl's read and housekeeping commands against a moto DynamoDB server and a real Redis."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from typer.testing import CliRunner

from fsm.decide import Event, EventKind, decide
from fsm.models import GroupKey
from fsm.plan import Phase
from fsm.run import new_run
from producers.cli import app
from sandbox.dynamo import DUMMY_ACCESS_KEY, DUMMY_SECRET_KEY, REGION
from sandbox.stack import SANDBOX_RUN_KEY
from tests.factories import failover, group, history_record
from workers.api import Orchestrator, RequestError, history_epoch, run_id_for
from workers.ports import HistoryRecord
from workers.settings import Settings

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def env(
    dynamodb_endpoint: str,
    redis_server_url: str,
    real_redis: redis.Redis,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    values = {
        "FAILOVER_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint,
        "FAILOVER_DYNAMODB_TABLE": f"cli-{uuid.uuid4().hex[:10]}",
        "FAILOVER_REDIS_URL": redis_server_url,
        "FAILOVER_KEY_PREFIX": prefix,
        "FAILOVER_BROKER_PREFIX": prefix,
        "FAILOVER_QUEUE": f"{prefix}steps",
        "FAILOVER_OPERATOR_ID": "ops",
        "FAILOVER_RUN_KEY": SANDBOX_RUN_KEY,
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "COLUMNS": "250",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def invoke(*args: str, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=input)
    return result.exit_code, result.output


def test_dynamodb_init_is_idempotent(env: dict[str, str]) -> None:
    for _ in range(2):
        code, out = invoke("dynamodb", "init")
        assert code == 0, out
        assert f"table {env['FAILOVER_DYNAMODB_TABLE']!r} is ready" in out


def test_history_lists_newest_first_and_as_json(env: dict[str, str]) -> None:
    invoke("dynamodb", "init")
    key = GroupKey(operator_id="ops", namespace="shop", name="shop")
    with Orchestrator(Settings()) as handle:
        for index, outcome in enumerate(["SUCCESS", "FAILED"]):
            handle.coordination.record_history(
                key,
                HistoryRecord(
                    run_id=f"run-{index}",
                    failover="shop/move",
                    group="shop/shop",
                    mode="CONSISTENCY",
                    source_cluster="site-a",
                    target_cluster="site-b",
                    force=False,
                    reason=f"drill {index}",
                    started_at=1000.0 + index,
                    finished_at=1010.0 + index,
                    outcome=outcome,
                    failed_step="wait_ready" if outcome == "FAILED" else None,
                ),
            )
    code, out = invoke("history", "shop/shop", "--output", "json")
    assert code == 0, out
    assert [r["run_id"] for r in json.loads(out)] == ["run-1", "run-0"]
    code, out = invoke("history", "shop/shop")
    assert code == 0 and "wait_ready" in out and "FAILED" in out


def test_lock_show_and_release_with_confirmation(env: dict[str, str]) -> None:
    invoke("dynamodb", "init")
    key = GroupKey(operator_id="ops", namespace="shop", name="shop")
    with Orchestrator(Settings()) as handle:
        grant = handle.coordination.acquire_lock(
            key, holder="site-a-worker", run_id="run-9", lease_seconds=300, now=time.time()
        )
    code, out = invoke("lock", "show", "shop/shop")
    assert code == 0 and "locked by site-a-worker for run run-9" in out and f"token {grant.token}" in out
    code, out = invoke("lock", "release", "shop/shop", "--reason", "stuck run", input="n\n")
    assert code == 1 and "Aborted" in out
    code, out = invoke("lock", "show", "shop/shop", "-o", "json")
    assert json.loads(out)["run_id"] == "run-9"
    code, out = invoke("lock", "release", "shop/shop", "--reason", "stuck run", "--yes")
    assert code == 0, out
    code, out = invoke("lock", "show", "shop/shop")
    assert "is not locked" in out
    code, out = invoke("history", "shop/shop", "-o", "json")
    [record] = json.loads(out)
    assert record["outcome"] == "LOCK_RELEASED" and record["reason"] == "stuck run"


def test_a_missing_table_is_one_clear_line(env: dict[str, str]) -> None:
    code, out = invoke("history", "shop/shop")
    assert code == 1
    assert out.startswith("error: ") and "failoverctl dynamodb init" in out
    assert len(out.strip().splitlines()) == 1


def test_a_bad_group_reference_is_a_usage_error(env: dict[str, str]) -> None:
    code, out = invoke("lock", "show", "shop")
    assert code == 2 and "expected NAMESPACE/NAME" in out


def test_status_lists_runs_from_redis(env: dict[str, str]) -> None:
    invoke("dynamodb", "init")
    with Orchestrator(Settings()) as handle:
        run = new_run(
            run_id="r-status", failover=failover(), group=group(), source_cluster="site-a", now=100.0
        )
        handle.store.create(run)
        started = decide(handle.store.load("r-status"), Event(kind=EventKind.START), 101.0).run  # type: ignore[arg-type]
        handle.store.commit(started, expected_version=1)
    code, out = invoke("status", "-o", "json")
    assert code == 0, out
    [listed] = json.loads(out)
    assert (listed["run_id"], listed["state"], listed["status"]) == ("r-status", "validate", "IN_PROGRESS")
    code, out = invoke("status", "shop/move-shop")
    assert "VALIDATING" in out


def test_submission_is_checked_and_deduplicated(env: dict[str, str]) -> None:
    invoke("dynamodb", "init")
    g = group()
    with Orchestrator(Settings()) as handle:
        with pytest.raises(RequestError, match="no active cluster recorded"):
            handle.submit(failover(), g)
        handle.coordination.set_initial_owner(g.key, "site-a")
        with pytest.raises(RequestError, match="already the active cluster"):
            handle.submit(failover(target="site-a"), g)
        first = handle.submit(failover(), g)
        again = handle.submit(failover(), g)
        assert first.created and not again.created
        assert first.run.run_id == again.run.run_id == run_id_for(failover(), g)
        assert handle.run(first.run.run_id) is not None


def _failed_stand_down(finished_at: float) -> HistoryRecord:
    return history_record(
        run_id=f"sd-{finished_at}",
        reason="came back",
        started_at=finished_at - 1,
        finished_at=finished_at,
        outcome="FAILED",
        message="demote_volumes: forbidden",
    )


def test_a_stand_down_is_started_once_per_ownership_epoch(env: dict[str, str]) -> None:
    invoke("dynamodb", "init")
    g = group()
    with Orchestrator(Settings()) as handle:
        handle.coordination.set_initial_owner(g.key, "site-b")
        with pytest.raises(RequestError, match="is the active cluster"):
            handle.stand_down(g, "site-b", reason="test")
        first = handle.stand_down(g, "site-a", reason="still active")
        again = handle.stand_down(g, "site-a", reason="still active")
    assert first.created and first.run.kind.value == "STANDDOWN"
    assert not again.created and again.run.run_id == first.run.run_id
    code, out = invoke("status")
    assert code == 0 and "STANDDOWN" in out and "CONSISTENCY" not in out


def test_a_stand_down_asked_on_a_read_older_than_the_latest_history_record_is_refused(
    env: dict[str, str],
) -> None:
    invoke("dynamodb", "init")
    g = group()
    with Orchestrator(Settings()) as handle:
        handle.coordination.set_initial_owner(g.key, "site-b")
        read_in = history_epoch(handle.coordination.history(g.key, limit=1))
        handle.coordination.record_history(g.key, _failed_stand_down(time.time() - 400))
        with pytest.raises(
            RequestError, match=r"'site-a' was read before the group's latest history record"
        ) as refused:
            handle.stand_down(g, "site-a", reason="still active", read_in=read_in)
        assert refused.value.field == "cluster"
        assert handle.runs(limit=5) == []  # nothing started
        fresh = handle.stand_down(
            g,
            "site-a",
            reason="still active",
            read_in=history_epoch(handle.coordination.history(g.key, limit=1)),
        )
    assert fresh.created


def test_a_failed_stand_down_is_tried_again_only_after_a_pause(env: dict[str, str]) -> None:
    invoke("dynamodb", "init")
    g = group()
    with Orchestrator(Settings()) as handle:
        handle.coordination.set_initial_owner(g.key, "site-b")
        handle.coordination.record_history(g.key, _failed_stand_down(time.time() - 400))
        retried = handle.stand_down(g, "site-a", reason="still active")
        handle.coordination.record_history(g.key, _failed_stand_down(time.time() - 10))
        with pytest.raises(RequestError, match=r"failed .*tried again in"):
            handle.stand_down(g, "site-a", reason="still active")
    assert retried.created


def test_watch_follows_a_run_to_its_end_and_exits_by_its_outcome(env: dict[str, str]) -> None:
    invoke("dynamodb", "init")
    with Orchestrator(Settings()) as handle:
        run = new_run(
            run_id="r-watch", failover=failover(), group=group(), source_cluster="site-a", now=100.0
        )
        handle.store.create(run)
        stored = handle.store.load("r-watch")
        assert stored is not None
        started = decide(stored, Event(kind=EventKind.START), 101.0).run
        handle.store.commit(started, expected_version=stored.version)
        code, out = invoke("watch", "r-watch", "--timeout", "0.5", "--interval", "0.1")
        assert code == 1 and "still running after 0.5s" in out
        current = handle.store.load("r-watch")
        assert current is not None
        failed = current.model_copy(
            update={
                "state": Phase.FAILED,
                "status": current.status.FAILED,
                "message": "failed at step validate: boom",
                "dispatch": None,
            }
        )
        handle.store.commit(failed, expected_version=current.version)
    code, out = invoke("watch", "shop/move-shop", "--interval", "0.1")
    assert code == 1, out
    assert "failed at step validate: boom" in out and "CONSISTENCY site-a→site-b: FAILED" in out
    code, out = invoke("watch", "no-such-run")
    assert code == 1 and out.startswith("error: no run 'no-such-run'")


def test_run_rebuild_recreates_a_lost_run_from_its_journal(env: dict[str, str]) -> None:
    from workers.ports import JournalEntry

    invoke("dynamodb", "init")
    g = group()
    with Orchestrator(Settings()) as handle:
        run = new_run(run_id="r-lost", failover=failover(), group=g, source_cluster="site-a", now=100.0)
        started = decide(run, Event(kind=EventKind.START), 101.0).run
        entry = JournalEntry(
            run_id="r-lost", sequence=1, stage="INITIALIZATION", state="ACQUIRING_LOCK", at=101.0,
            run_json=started.model_dump_json(),
        )  # fmt: skip
        handle.coordination.write_journal(g.key, entry)
        assert handle.run("r-lost") is None  # Redis never had it (or lost it)
    code, out = invoke("run", "rebuild", "r-lost", "--group", "shop/shop", "--operator-id", g.key.operator_id)
    assert code == 0, out
    assert "rebuilt run r-lost" in out and "journal entry #1" in out
    with Orchestrator(Settings()) as handle:
        rebuilt = handle.run("r-lost")
    assert rebuilt is not None and rebuilt.state_name == started.state_name
    code, out = invoke("run", "rebuild", "r-lost", "--group", "shop/shop", "--operator-id", g.key.operator_id)
    assert code == 0 and "nothing to rebuild" in out
    code, out = invoke(
        "run", "rebuild", "r-unknown", "--group", "shop/shop", "--operator-id", g.key.operator_id
    )
    assert code == 1 and "r-unknown" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
