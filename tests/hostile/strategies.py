"""Hypothesis strategies for hostile ``Failover`` and ``FailoverGroup`` objects: structured generation of
valid and invalid values for every field (durations huge, negative or garbage; booleans that are not
booleans; long and unicode strings; deep nesting; wrong types; missing and unknown fields)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NAMESPACES = ["shop", "payments", "victim"]


def deep(depth: int, leaf: Any = "x") -> Any:
    """``depth`` nested one-key mappings and lists, built without recursion."""
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


# Cheap long strings: hypothesis need not draw a million characters one by one.
long_strings = st.builds(
    lambda n, c: c * n, st.integers(201, 1_100_000), st.sampled_from(["x", "é", "9", "\n", "🙂"])
)
json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
garbage = st.one_of(
    json_leaves,
    st.recursive(
        json_leaves,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=8,
    ),
    st.integers(10, 300).map(deep),  # deeper: hypothesis cannot print it (named cases go to 10,000)
    st.integers(-(10**400), 10**400),
)
unicode_text = st.text(min_size=1, max_size=40)

valid_durations = st.sampled_from(["30s", "5m", "1h30m", "1.5h", "250ms", "168h", "10us", "1h0m0.5s"])
hostile_durations = st.one_of(
    st.sampled_from(
        ["99999999999999h", "169h", "0s", "-5m", "1ns", "5", "", " ", "1h-1m", "NaNs", "1e9h", "5 m", "µs"]
    ),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.builds(lambda n, u: "9" * n + u, st.integers(10, 500), st.sampled_from(["h", "m", "s", "ns"])),
    st.builds(lambda n: "1h" * n, st.integers(2, 100_000)),
    unicode_text,
    garbage,
)
durations = st.one_of(valid_durations, hostile_durations)

hostile_booleans = st.sampled_from([0, 1, "yes", "no", "true", "True", "false", "", None, 1.0, "1", [], {}])
booleans = st.one_of(st.booleans(), st.booleans(), hostile_booleans)

valid_names = st.sampled_from(["shop", "web", "db", "a", "x" * 253])
names = st.one_of(valid_names, unicode_text, long_strings, st.sampled_from(["", " ", "x" * 254]), garbage)
namespaces = st.one_of(st.sampled_from(NAMESPACES), st.none(), names)
clusters = st.one_of(st.sampled_from(["site-a", "site-b"]), names)
modes = st.one_of(
    st.sampled_from(["CONSISTENCY", "UPTIME"]), st.sampled_from(["consistency", "FAST", ""]), garbage
)


def _maybe(values: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Each key present or missing; sometimes an unknown key too."""
    base = st.fixed_dictionaries({}, optional=values)
    unknown = st.dictionaries(st.sampled_from(["bogus", "x" * 300, "spec"]), garbage, max_size=1)
    return st.builds(
        lambda a, b, extra: {**a, **(b if extra else {})},
        base,
        unknown,
        st.integers(0, 9).map(lambda n: n == 0),
    )


_valid_refs = st.lists(
    st.fixed_dictionaries({"name": st.just("shop")}, optional={"namespace": st.sampled_from(NAMESPACES)}),
    min_size=1,
    max_size=1,
)
group_refs = st.one_of(
    st.lists(_maybe({"name": names, "namespace": namespaces}), max_size=4),
    st.lists(
        st.fixed_dictionaries({"name": st.just("shop")}, optional={"namespace": st.sampled_from(NAMESPACES)}),
        min_size=1,
        max_size=3,
    ),
    garbage,
)

# Mostly valid, some fields hostile: the shape a careless or hostile user sends.
_near_valid = st.builds(
    lambda target, mode, force, dry, refs: {
        "targetCluster": target,
        "failoverMode": mode,
        "force": force,
        "dryRun": dry,
        "failoverGroups": refs,
    },
    st.sampled_from(["site-a", "site-b"]),
    st.sampled_from(["CONSISTENCY", "UPTIME"]),
    booleans,
    booleans,
    st.one_of(_valid_refs, _valid_refs, group_refs),
)
failover_specs = st.one_of(
    _maybe(
        {
            "targetCluster": clusters,
            "failoverMode": modes,
            "force": booleans,
            "reason": st.one_of(unicode_text, long_strings, garbage),
            "failoverGroups": group_refs,
            "dryRun": booleans,
        }
    ),
    _near_valid,
    _near_valid,
    _near_valid,
    _near_valid,
    _near_valid,
    garbage,
)

_good_metadata = st.fixed_dictionaries(
    {"name": st.sampled_from(["move-shop", "drill"]), "namespace": st.sampled_from(NAMESPACES)}
)
metadata = st.one_of(
    _good_metadata,
    _good_metadata,
    _good_metadata,
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["move-shop", "drill"]), names)},
        optional={"namespace": st.one_of(st.sampled_from(NAMESPACES), names), "uid": unicode_text},
    ),
    garbage,
)


# What an API server can return: metadata an object with string names, status an object (the CRD
# declares it so; only a file given to the CLI can have anything there).
server_metadata = st.one_of(
    _good_metadata,
    _good_metadata,
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["move-shop", "drill"]), unicode_text, long_strings)},
        optional={"namespace": st.sampled_from(NAMESPACES), "uid": unicode_text},
    ),
)
server_status = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["PENDING", "IN_PROGRESS"]),
        "conditions": st.lists(garbage, max_size=2),
    },
)


def objects(
    kind: str, spec: st.SearchStrategy[Any], *, from_server: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"metadata": server_metadata if from_server else metadata, "spec": spec},
        optional={
            "apiVersion": st.sampled_from(
                ["crd.hahomelabs.com/v1alpha1"] * 5 + ["v1", "crd.hahomelabs.com/v2"]
            ),
            "kind": st.sampled_from([kind] * 5 + ["Pod", kind.lower()]),
            "status": server_status if from_server else st.one_of(st.none(), server_status, garbage),
        },
    )


failovers = objects("Failover", failover_specs)
server_failovers = st.one_of(
    objects("Failover", _near_valid, from_server=True), objects("Failover", failover_specs, from_server=True)
)
# Files for the CLI: half of them near-valid Failovers of the sample group's namespace.
_shop_failovers = st.builds(
    lambda spec, name: {
        "apiVersion": "crd.hahomelabs.com/v1alpha1",
        "kind": "Failover",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    },
    _near_valid,
    st.sampled_from(["move-shop", "drill"]),
)
cli_failovers = st.one_of(_shop_failovers, failovers)

items = st.lists(
    _maybe(
        {
            "kind": st.one_of(
                st.sampled_from(["Deployment", "StatefulSet", "CronJob", "Ingress", "HelmRelease"]), garbage
            ),
            "name": names,
            "volumeReplications": st.one_of(st.lists(names, max_size=3), garbage),
            "triggerReconcile": booleans,
        }
    ),
    max_size=4,
)
group_specs = st.one_of(
    _maybe(
        {
            "operatorID": st.one_of(st.just("failover-orchestrator"), names),
            "suspended": booleans,
            "suspensionReason": st.one_of(unicode_text, long_strings),
            "timeouts": st.one_of(
                _maybe({"transitoryState": durations, "unhealthyPrimary": durations, "heartbeat": durations}),
                garbage,
            ),
            "heartbeatInterval": durations,
            "workloads": st.one_of(items, garbage),
            "networkResources": st.one_of(items, garbage),
            "fluxResources": st.one_of(items, garbage),
            "allowedFailoverNamespaces": st.one_of(st.lists(namespaces, max_size=3), garbage),
        }
    ),
    st.builds(
        lambda hb, timeouts, suspended: {
            "operatorID": "failover-orchestrator",
            "heartbeatInterval": hb,
            "timeouts": timeouts,
            "suspended": suspended,
            "workloads": [{"kind": "Deployment", "name": "web"}],
        },
        durations,
        _maybe({"transitoryState": durations, "heartbeat": durations}),
        booleans,
    ),
    garbage,
)
_near_valid_group = st.builds(
    lambda hb, timeouts, suspended, allowed: {
        "operatorID": "failover-orchestrator",
        "heartbeatInterval": hb,
        "timeouts": timeouts,
        "suspended": suspended,
        "workloads": [{"kind": "Deployment", "name": "web", "volumeReplications": ["data"]}],
        "allowedFailoverNamespaces": allowed,
    },
    st.one_of(valid_durations, valid_durations, hostile_durations),
    st.fixed_dictionaries({}, optional={"heartbeat": st.one_of(valid_durations, hostile_durations)}),
    booleans,
    st.one_of(
        st.just([]), st.lists(st.sampled_from(NAMESPACES), max_size=2), st.lists(namespaces, max_size=2)
    ),
)
group_specs = st.one_of(_near_valid_group, group_specs)
groups = objects("FailoverGroup", group_specs, from_server=True)
