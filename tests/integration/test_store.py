"""The run store on a real Redis: compare-and-set under concurrency, TTLs and the overdue index."""

from __future__ import annotations

import threading

import pytest
import redis

from fsm.decide import Event, EventKind, decide
from fsm.plan import Phase
from fsm.run import Run, new_run
from sandbox.stack import SANDBOX_RUN_KEY, sandbox_signer
from tests.factories import failover, group
from workers.settings import Settings
from workers.store import RunStore

pytestmark = pytest.mark.integration


def make_run(run_id: str = "r1") -> Run:
    return new_run(run_id=run_id, failover=failover(), group=group(), source_cluster="site-a", now=100.0)


def test_create_is_exclusive_and_load_round_trips(real_redis: redis.Redis, prefix: str) -> None:
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
    run = make_run()
    assert store.create(run)
    assert not store.create(run)
    loaded = store.load("r1")
    assert loaded is not None and loaded.version == 1
    assert loaded.model_copy(update={"version": 0}) == run
    assert [r.run_id for r in store.for_failover("shop/move-shop")] == ["r1"]
    assert [r.run_id for r in store.recent()] == ["r1"]


def test_a_commit_against_a_stale_version_is_refused(real_redis: redis.Redis, prefix: str) -> None:
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
    store.create(make_run())
    base = store.load("r1")
    assert base is not None
    first = store.commit(base.model_copy(update={"message": "first"}), expected_version=base.version)
    second = store.commit(base.model_copy(update={"message": "second"}), expected_version=base.version)
    assert first is not None and first.version == 2
    assert second is None
    stored = store.load("r1")
    assert stored is not None and (stored.message, stored.version) == ("first", 2)


def test_concurrent_writers_lose_no_update(real_redis: redis.Redis, prefix: str) -> None:
    """8 threads each add 25 to a counter by load/modify/commit; every increment must survive."""
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
    store.create(make_run())
    conflicts = []

    def writer() -> None:
        done = 0
        while done < 25:
            run = store.load("r1")
            assert run is not None
            updated = run.model_copy(update={"tickets": run.tickets + 1})
            if store.commit(updated, expected_version=run.version) is None:
                conflicts.append(1)
                continue
            done += 1

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = store.load("r1")
    assert final is not None
    assert final.tickets == 200
    assert final.version == 201
    assert conflicts, "8 threads on one key should have collided at least once"


def test_in_flight_runs_are_indexed_by_due_time_and_finished_runs_expire(
    real_redis: redis.Redis, prefix: str
) -> None:
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix, ttl=60)
    run = make_run()
    store.create(run)
    assert store.overdue(before=99.0) == []
    assert store.overdue(before=101.0) == ["r1"]
    started = decide(run.model_copy(update={"version": 1}), Event(kind=EventKind.START), 200.0).run
    committed = store.commit(started, expected_version=1)
    assert committed is not None
    assert store.overdue(before=199.0) == []
    assert store.overdue(before=201.0) == ["r1"]
    assert real_redis.ttl(f"{prefix}run:r1") == -1
    finished = committed.model_copy(update={"state": Phase.FAILED, "dispatch": None})
    assert store.commit(finished, expected_version=committed.version) is not None
    assert store.overdue(before=10_000.0) == []
    assert 0 < real_redis.ttl(f"{prefix}run:r1") <= 60


def test_a_finished_run_costs_little_memory(real_redis: redis.Redis, prefix: str) -> None:
    store = RunStore(real_redis, signer=sandbox_signer(), prefix=prefix)
    store.create(make_run())
    assert store.memory_usage("r1") < 20_000


def test_an_unreachable_redis_is_a_temporary_error_of_ours() -> None:
    from workers.errors import TemporaryError

    store = RunStore(
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2),
        signer=sandbox_signer(),
        prefix="x:",
    )
    with pytest.raises(TemporaryError, match="Redis: ConnectionError") as caught:
        store.load("r1")
    assert isinstance(caught.value.__cause__, redis.ConnectionError)
    store.close()


def test_the_store_of_the_settings_names_its_url_and_variable_when_redis_does_not_answer() -> None:
    from workers.errors import TemporaryError

    settings = Settings(redis_url="redis://:secret@127.0.0.1:1/0", run_key=SANDBOX_RUN_KEY)
    store = RunStore.from_settings(settings)
    with pytest.raises(TemporaryError) as caught:
        store.recent(5)
    message = caught.value.describe()
    assert message.startswith("Redis at redis://:***@127.0.0.1:1/0 (FAILOVER_REDIS_URL): ConnectionError")
    assert "secret" not in message
    store.close()


def test_queue_lengths_read_the_broker_lists(
    real_redis: redis.Redis, redis_server_url: str, prefix: str
) -> None:
    from workers.store import queue_lengths

    real_redis.rpush(f"{prefix}steps", "a", "b", "c")
    assert queue_lengths(redis_server_url, ["steps", "empty"], prefix=prefix) == {"steps": 3, "empty": 0}
