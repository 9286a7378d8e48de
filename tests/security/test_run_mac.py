"""Runs are authenticated data (issue 12): the MAC of every run in the store, on fakeredis; the pin to
the FailoverGroup; the settings that refuse to run without a key."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import fakeredis
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from fsm.models import ResourceRef
from fsm.plan import Step
from fsm.run import Run, new_run
from sandbox.fakes import FakeClusters, FakeCoordination, fake_adapters
from sandbox.stack import SANDBOX_RUN_KEY, sandbox_signer
from tests.factories import all_refs, failover, group
from tests.security.sealed import earlier_format, fields_of, sealed_value
from workers.engine import Engine
from workers.errors import PermanentError
from workers.messages import START_TASK
from workers.ports import Role
from workers.settings import MissingRunKey, Settings
from workers.steps import StepContext, history_record
from workers.store import RunStore
from workers.trust import MAC_FIELD, SCHEME, ForgedRun, RunSigner, Unsigned

NEW_KEY = "the-new-run-key-after-rotation"
VICTIM = {"kind": "Deployment", "namespace": "victim", "name": "critical"}


def forged_count() -> float:
    return REGISTRY.get_sample_value("failover_forged_runs_total") or 0.0


def a_run(run_id: str | None = None, **group_spec: Any) -> Run:
    return new_run(
        run_id=run_id or f"run-{uuid.uuid4().hex[:8]}",
        failover=failover(),
        group=group(**group_spec),
        source_cluster="site-a",
        now=time.time(),
    )


def raw_of(store: RunStore, run_id: str) -> dict[str, Any]:
    raw = store.client.hget(f"{store.prefix}run:{run_id}", "d")
    assert raw is not None
    return fields_of(raw)


def overwrite(store: RunStore, run_id: str, document: dict[str, Any]) -> None:
    store.client.hset(f"{store.prefix}run:{run_id}", mapping={"v": 1, "d": sealed_value(document)})


def guessed_mac(document: dict[str, Any]) -> str:
    mac: str = json.loads(RunSigner("a guessed key").seal(Run.model_validate(document)))[MAC_FIELD]
    return mac


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis) -> RunStore:
    return RunStore(fake_redis, signer=sandbox_signer(), prefix="s:")


# --- the MAC ------------------------------------------------------------------------------------------


def test_every_stored_run_carries_a_mac_over_its_stored_bytes_and_loads_back(store: RunStore) -> None:
    run = a_run()
    assert store.create(run)

    document = raw_of(store, run.run_id)
    assert document[MAC_FIELD].startswith("hmac-sha256-v2:")
    raw = store.client.hget(f"{store.prefix}run:{run.run_id}", "d")
    assert raw is not None
    body = raw[raw.index(b'"run":') + len(b'"run":') : -1]
    expected = hmac.new(SANDBOX_RUN_KEY.encode(), body, hashlib.sha256).hexdigest()
    assert document[MAC_FIELD] == SCHEME + expected
    loaded = store.load(run.run_id)
    assert loaded is not None and loaded.model_copy(update={"version": 0}) == run
    committed = store.commit(loaded.model_copy(update={"message": "x"}), expected_version=1)
    assert committed is not None and raw_of(store, run.run_id)[MAC_FIELD] != document[MAC_FIELD]
    assert store.load(run.run_id) == committed


def test_a_crafted_run_without_a_mac_is_refused_logged_once_and_counted(store: RunStore) -> None:
    crafted = a_run()
    overwrite(store, crafted.run_id, crafted.model_dump(mode="json"))
    before = forged_count()

    with capture_logs() as logs:
        assert store.load(crafted.run_id) is None
        assert store.load(crafted.run_id) is None  # the same value again: not reported again
        assert store.load_many([crafted.run_id]) == {}

    events = [e for e in logs if e["event"] == "security.forged_run"]
    assert events == [
        {"event": "security.forged_run", "run_id": crafted.run_id, "reason": "no MAC", "log_level": "error"}
    ]
    assert forged_count() == before + 1


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(lambda d: d.update(target_cluster="site-c"), id="target"),
        pytest.param(
            lambda d: d["resources"]["workloads"].append(
                {"kind": "Deployment", "namespace": "victim", "name": "critical"}
            ),
            id="resources",
        ),
        pytest.param(lambda d: d.update(mac=SCHEME + "0" * 64), id="mac"),
        pytest.param(lambda d: d.update(mac="hmac-sha256:" + "0" * 64), id="earlier-scheme"),
        pytest.param(lambda d: d.update(mac=guessed_mac(d)), id="guessed-key"),
    ],
)
def test_a_valid_run_altered_in_redis_is_refused(store: RunStore, alter: Any) -> None:
    run = a_run()
    assert store.create(run)
    document = raw_of(store, run.run_id)
    alter(document)
    overwrite(store, run.run_id, document)
    before = forged_count()

    assert store.load(run.run_id) is None
    assert store.load_many([run.run_id]) == {}
    assert forged_count() == before + 1


def test_a_valid_run_copied_under_another_id_is_refused(store: RunStore) -> None:
    genuine = a_run()
    assert store.create(genuine)
    overwrite(store, "someone-else", raw_of(store, genuine.run_id))

    assert store.load("someone-else") is None


def test_a_forged_run_and_its_start_message_change_nothing(fake_redis: fakeredis.FakeRedis) -> None:
    """The attack of issue 12 on the engine: a crafted run naming an object of no group, then its
    start message and a step message. No step runs, nothing is written, nothing is decided."""
    adapters = fake_adapters(fake_redis, "e:", settle_checks=1)
    assert isinstance(adapters.effects, FakeClusters) and isinstance(adapters.coordination, FakeCoordination)
    g = group()
    adapters.effects.load("site-a", all_refs(g), Role.ACTIVE)
    adapters.coordination.set_initial_owner(g.key, "site-a")
    sent: list[tuple[str, str]] = []

    class Sender:
        def send(self, name: str, run_id: str, ticket: int, *, countdown: float, cluster: str | None) -> None:
            sent.append((name, run_id))

    store = RunStore(fake_redis, signer=sandbox_signer(), prefix="e:")
    engine = Engine(store, adapters, Sender(), Settings(redis_url="redis://unused", run_key=SANDBOX_RUN_KEY))
    crafted = a_run().model_dump(mode="json")
    crafted["resources"]["workloads"] = [{"kind": "Deployment", "namespace": "victim", "name": "critical"}]
    crafted["mac"] = "hmac-sha256:" + "ab" * 32
    overwrite(store, crafted["run_id"], crafted)
    before = dict(fake_redis.hgetall(f"e:run:{crafted['run_id']}"))

    assert engine.start(crafted["run_id"]) is None
    assert engine.run_step(Step.VALIDATE, crafted["run_id"], 1) is None

    assert sent == []
    assert dict(fake_redis.hgetall(f"e:run:{crafted['run_id']}")) == before
    assert adapters.coordination.lock_info(g.key) is None
    assert adapters.coordination.history(g.key) == []
    assert adapters.coordination.active_cluster(g.key) == "site-a"
    assert START_TASK not in [name for name, _ in sent]


# --- rotation -----------------------------------------------------------------------------------------


def test_a_run_sealed_with_the_previous_key_is_accepted_and_sealed_again_with_the_current(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    old = RunStore(fake_redis, signer=RunSigner(SANDBOX_RUN_KEY), prefix="r:")
    run = a_run()
    assert old.create(run)
    rotated = RunStore(fake_redis, signer=RunSigner(NEW_KEY, previous=SANDBOX_RUN_KEY), prefix="r:")

    loaded = rotated.load(run.run_id)

    assert loaded is not None and loaded.run_id == run.run_id
    new_only = RunStore(fake_redis, signer=RunSigner(NEW_KEY), prefix="r:")
    assert new_only.load(run.run_id) == loaded  # re-sealed in Redis with the current key
    assert old.load(run.run_id) is None  # and no longer with the old one


def test_without_the_previous_key_a_run_sealed_with_it_is_refused(fake_redis: fakeredis.FakeRedis) -> None:
    old = RunStore(fake_redis, signer=RunSigner(SANDBOX_RUN_KEY), prefix="r2:")
    run = a_run()
    assert old.create(run)

    with pytest.raises(ForgedRun, match="does not verify"):
        RunSigner(NEW_KEY).open(fake_redis.hget(f"r2:run:{run.run_id}", "d") or b"", run.run_id)


def _stored(fake_redis: fakeredis.FakeRedis, prefix: str, run_id: str) -> bytes:
    raw = fake_redis.hget(f"{prefix}run:{run_id}", "d")
    assert raw is not None
    return raw


@pytest.mark.parametrize("key", [SANDBOX_RUN_KEY, "the-previous-key"])
def test_a_run_sealed_in_the_earlier_format_is_accepted_and_sealed_again_in_the_current(
    fake_redis: fakeredis.FakeRedis, key: str
) -> None:
    """A rolling upgrade: runs in flight were written by the previous version (the MAC over the
    canonical JSON, in the run's fields), with the current key or, after a rotation, the previous."""
    store = RunStore(fake_redis, signer=RunSigner(SANDBOX_RUN_KEY, previous="the-previous-key"), prefix="u:")
    run = a_run()
    fake_redis.hset(f"u:run:{run.run_id}", mapping={"v": 1, "d": earlier_format(key, run)})

    loaded = store.load(run.run_id)

    assert loaded is not None and loaded.model_copy(update={"version": 0}) == run
    assert _stored(fake_redis, "u:", run.run_id).startswith(b'{"mac":"' + SCHEME.encode())
    assert RunStore(fake_redis, signer=RunSigner(SANDBOX_RUN_KEY), prefix="u:").load(run.run_id) == loaded


def test_a_run_in_the_earlier_format_with_another_key_is_refused(fake_redis: fakeredis.FakeRedis) -> None:
    store = RunStore(fake_redis, signer=RunSigner(SANDBOX_RUN_KEY), prefix="u2:")
    run = a_run()
    value = earlier_format("a guessed key", run)
    fake_redis.hset(f"u2:run:{run.run_id}", mapping={"v": 1, "d": value})

    assert store.load(run.run_id) is None
    assert _stored(fake_redis, "u2:", run.run_id) == value.encode()  # nothing written over it


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda raw: raw + b" ", id="trailing-space"),
        pytest.param(lambda raw: raw[:-1] + b',"x":1}', id="trailing-field"),
        pytest.param(lambda raw: raw[:-1] + b"}}", id="extra-brace"),
        pytest.param(lambda raw: raw.replace(b'","run":', b'", "run":', 1), id="reformatted"),
        pytest.param(lambda raw: raw.replace(b'"run":{', b'"run":{"x":1,', 1), id="field-added"),
        pytest.param(lambda raw: raw[:-1], id="truncated"),
    ],
)
def test_a_sealed_value_changed_by_even_one_byte_is_refused(store: RunStore, mangle: Any) -> None:
    run = a_run()
    assert store.create(run)
    key = f"{store.prefix}run:{run.run_id}"
    raw = store.client.hget(key, "d")
    assert raw is not None
    store.client.hset(key, "d", mangle(raw))

    assert RunStore(store.client, signer=sandbox_signer(), prefix=store.prefix).load(run.run_id) is None


def test_the_run_a_commit_wrote_is_not_parsed_again_but_other_bytes_are(store: RunStore) -> None:
    run = a_run()
    assert store.create(run)
    loaded = store.load(run.run_id)
    assert loaded is not None
    committed = store.commit(loaded.model_copy(update={"message": "committed"}), expected_version=1)
    assert committed is not None

    assert store.load(run.run_id) is committed  # the bytes it wrote: remembered, not opened again
    document = raw_of(store, run.run_id)
    overwrite(store, run.run_id, {**document, "message": "altered"})
    assert store.load(run.run_id) is None


# --- settings -----------------------------------------------------------------------------------------


def test_production_settings_refuse_to_work_without_a_run_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FAILOVER_RUN_KEY", "FAILOVER_RUN_KEY_PREVIOUS", "FAILOVER_INSECURE_DEV"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(MissingRunKey, match="FAILOVER_RUN_KEY"):
        Settings().run_signer()
    with pytest.raises(MissingRunKey):
        RunStore.from_settings(Settings())
    assert isinstance(Settings(insecure_dev=True).run_signer(), Unsigned)


def test_the_keys_come_from_the_environment_and_are_passed_on_but_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILOVER_RUN_KEY", NEW_KEY)
    monkeypatch.setenv("FAILOVER_RUN_KEY_PREVIOUS", SANDBOX_RUN_KEY)
    settings = Settings()

    assert isinstance(settings.run_signer(), RunSigner)
    assert NEW_KEY not in repr(settings)
    env = settings.to_env()
    assert env["FAILOVER_RUN_KEY"] == NEW_KEY and env["FAILOVER_RUN_KEY_PREVIOUS"] == SANDBOX_RUN_KEY


# --- the pin ------------------------------------------------------------------------------------------


def test_a_run_is_pinned_to_its_group_as_read_from_the_cluster() -> None:
    g = group()
    g = g.model_copy(update={"metadata": g.metadata.model_copy(update={"uid": "u-1", "generation": 7})})
    run = new_run(run_id="p", failover=failover(), group=g, source_cluster="site-a", now=0.0)

    assert run.pin is not None
    assert (run.pin.uid, run.pin.generation, run.pin.digest) == ("u-1", 7, run.resources.digest())


def _context(run: Run, fake_redis: fakeredis.FakeRedis) -> StepContext:
    adapters = fake_adapters(fake_redis, "p:", settle_checks=1)
    return StepContext(
        run=run.model_copy(update={"token": 1}),
        cluster="site-a",
        effects=adapters.effects,
        coordination=adapters.coordination,
        now=0.0,
        lease_seconds=30.0,
        holder="h",
    )


def test_an_effect_refuses_resources_that_are_not_the_pinned_ones(fake_redis: fakeredis.FakeRedis) -> None:
    """Even a run sealed with the key (a bug, an insider) cannot act on objects outside its pin."""
    run = a_run()
    victim = ResourceRef(kind="Deployment", namespace="victim", name="critical")
    widened = run.resources.model_copy(update={"workloads": [*run.resources.workloads, victim]})
    ctx = _context(run.model_copy(update={"resources": widened}), fake_redis)

    with pytest.raises(PermanentError, match="not the ones pinned"):
        ctx.make([victim], Role.PASSIVE)
    with pytest.raises(PermanentError, match="not the ones pinned"):
        ctx.make(run.resources.workloads, Role.PASSIVE)

    honest = _context(run, fake_redis)
    with pytest.raises(PermanentError, match="not in its group's resources"):
        honest.make([victim], Role.PASSIVE)


def test_completion_is_conditioned_on_the_digest_kept_with_the_lock(fake_redis: fakeredis.FakeRedis) -> None:
    adapters = fake_adapters(fake_redis, "c:", settle_checks=1)
    coordination = adapters.coordination
    g = group()
    coordination.set_initial_owner(g.key, "site-a")
    grant = coordination.acquire_lock(g.key, holder="h", run_id="r", lease_seconds=30, now=0.0, digest="d1")
    record = history_record(a_run("r"), outcome="SUCCESS", now=1.0)
    with pytest.raises(Exception, match="other resources"):
        coordination.complete_failover(
            g.key, token=grant.token, expected_owner="site-a", new_owner="site-b", record=record, digest="d2"
        )
    assert coordination.active_cluster(g.key) == "site-a" and coordination.history(g.key) == []


def test_a_run_read_before_it_was_altered_is_refused_after(store: RunStore) -> None:
    """The store remembers the runs it verified with their exact bytes (a step reads its run twice):
    other bytes under the same id are verified again, never taken from that memory."""
    run = a_run()
    assert store.create(run)
    first = store.load(run.run_id)
    assert first is not None and store.load(run.run_id) is first  # the same bytes: not parsed twice
    document = raw_of(store, run.run_id)
    document["reason"] = "altered after it was read"
    overwrite(store, run.run_id, document)
    assert store.load(run.run_id) is None
