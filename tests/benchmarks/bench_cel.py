"""Benchmark: what the sandbox's CEL (admission policies, CRD rules) costs per write, naive vs bindings.

Not a test: it prints figures measured in one run on this machine. Run it with
``PYTHONPATH=$PWD .venv/bin/python -m tests.benchmarks.bench_cel [--requests 2000] [--mode both]``.

One sandbox cluster (no controllers, no HTTP) holds the sample group "shop" as the orchestrator leaves
it: every object labelled with its group and stamped with an epoch, the FailoverGroup carrying its
fence, so the shipped fence policies (deploy/fencing) apply as they do when workers fail groups over.
Four kinds of write, each ``--requests`` times, through the cluster's own code paths:

- ``admit allowed``: PolicyAdmission.admit of the worker's UPDATE of Deployment web at the fence (the
  fence policy's matchCondition, 4 variables, 2 validations: all pass);
- ``admit refused``: the same below the fence (denied, the messageExpression formats the message);
- ``PATCH fenced``: a whole merge PATCH of the Deployment by the worker through ResourceApi.handle
  (decode, patch, validation, admission, store), as a request over HTTP runs once parsed;
- ``PATCH FailoverGroup``: the worker raising the group's fence and changing a timeout (fence-grows
  policy plus the CRD's x-kubernetes-validations rules on the changed durations).

``--mode naive`` replaces :class:`sandbox.kube.expressions.Bindings` with the way the sandbox evaluated
CEL before: a new ``cel.Context`` of every value for each expression (object, oldObject, request,
namespaceObject and params converted again by every expression); ``bindings`` is the current code;
``both`` (default) runs the two and prints the ratio. Denials and results are checked to be equal.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import cel

from sandbox.kube import SandboxCluster, expressions
from sandbox.kube.admission import Attributes
from sandbox.kube.api import ResourceApi, Response, Route
from sandbox.kube.errors import ApiError
from sandbox.kube.identity import WORKER_GROUPS, WORKER_USERNAME, RequestContext, UserInfo
from sandbox.kube.samples import sample_manifests

GROUP_LABEL = "failover.hahomelabs.com/group"
EPOCH = "failover.hahomelabs.com/epoch"
FENCE = "failover.hahomelabs.com/fence"
NAMESPACE = "shop"
WORKER = UserInfo(WORKER_USERNAME, WORKER_GROUPS)


class NaiveBindings:
    """The old evaluation: every expression gets a new context converting every value whole.

    Standalone (not a subclass of Bindings) so that this script also runs on a tree from before
    Bindings existed, where ``--mode naive`` then measures that tree's own code.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)

    def bind(self, name: str, value: Any) -> None:
        self._values[name] = value

    def prepare(self, texts: list[str]) -> None:
        """Nothing converted ahead: each evaluation converts everything."""

    def evaluate(self, text: str, variables: dict[str, Any] | None = None) -> Any:
        context = dict(self._values)
        if variables is not None:
            context["variables"] = variables
        try:
            compiled = expressions.program(text)
        except expressions.CompileError as exc:
            raise expressions.EvaluationError(f"expression '{text}' resulted in error: {exc}") from exc
        try:
            return compiled.execute(cel.Context(variables=context, functions=expressions._FUNCTIONS))
        except Exception as exc:
            detail = f"no such key: {exc.args[0]}" if isinstance(exc, KeyError) and exc.args else str(exc)
            raise expressions.EvaluationError(f"expression '{text}' resulted in error: {detail}") from exc


def populate(cluster: SandboxCluster, fence: int) -> None:
    """The sample group, labelled and stamped as the orchestrator leaves it."""
    for manifest in sample_manifests(True):
        obj = copy.deepcopy(manifest)
        meta = obj["metadata"]
        if obj["kind"] == "FailoverGroup":
            meta.setdefault("annotations", {})[FENCE] = str(fence)
        elif obj["kind"] != "Namespace":
            meta.setdefault("labels", {})[GROUP_LABEL] = NAMESPACE
            meta.setdefault("annotations", {})[EPOCH] = str(fence)
        cluster.store.put(obj)


def _timed(count: int, call: Callable[[int], Any]) -> tuple[float, list[Any]]:
    """µs per call of ``call(i)`` over ``count`` calls, and the outcomes (result or denial message)."""
    outcomes: list[Any] = []
    started = time.perf_counter()
    for index in range(count):
        try:
            outcomes.append(call(index))
        except ApiError as exc:
            outcomes.append(exc.message)
    return (time.perf_counter() - started) / count * 1e6, outcomes


def run(count: int, fence: int) -> dict[str, tuple[float, list[Any]]]:
    """Each scenario ``count`` times on a fresh cluster; µs per request and the outcomes."""
    figures: dict[str, tuple[float, list[Any]]] = {}
    with SandboxCluster("bench-cel", run_controllers=False, install_rbac=False) as cluster:
        populate(cluster, fence)
        store = cluster.store
        api = ResourceApi(store, cluster.faults, cluster.watch_settings, lambda: False, cluster.admission)
        kinds = store.registry
        deployments = kinds.by_key("deployments.apps")
        groups = kinds.by_key("failovergroups.crd.hahomelabs.com")
        assert deployments is not None and groups is not None
        web = store.get(deployments, NAMESPACE, "web")

        def admit(epoch: int) -> Callable[[int], Any]:
            new = copy.deepcopy(web)
            new["metadata"]["annotations"][EPOCH] = str(epoch)
            new["spec"]["replicas"] = 0
            attrs = Attributes("UPDATE", deployments, "v1", None, NAMESPACE, "web", WORKER, False, new, web)
            return lambda _i: cluster.admission.admit(attrs, RequestContext(WORKER))

        def patch(route: Route, body: Callable[[int], Any]) -> Callable[[int], Any]:
            headers = {"content-type": "application/merge-patch+json"}

            def call(i: int) -> Any:
                raw = json.dumps(body(i)).encode()
                answer = api.handle("PATCH", route, {}, headers, raw, context=RequestContext(WORKER))
                assert isinstance(answer, Response)
                return answer.body["metadata"]["annotations"]

            return call

        def scale(i: int) -> Any:
            return {"metadata": {"annotations": {EPOCH: str(fence + i)}}, "spec": {"replicas": i % 3}}

        def raise_fence(i: int) -> Any:
            timeouts = {"heartbeat": f"{60 + i % 60}s"}
            return {"metadata": {"annotations": {FENCE: str(fence + i + 1)}}, "spec": {"timeouts": timeouts}}

        scenarios = {
            "admit allowed": admit(fence),
            "admit refused": admit(fence - 1),
            "PATCH fenced": patch(Route(deployments, "v1", NAMESPACE, "web", None), scale),
            "PATCH FailoverGroup": patch(Route(groups, "v1alpha1", NAMESPACE, "shop", None), raise_fence),
        }
        for name, call in scenarios.items():
            _timed(1, call)  # compile the expressions, warm the caches
            figures[name] = _timed(count, call)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000, help="requests per scenario")
    parser.add_argument("--mode", choices=("naive", "bindings", "both"), default="both")
    args = parser.parse_args()
    modes = ("naive", "bindings") if args.mode == "both" else (args.mode,)
    current: Any = getattr(expressions, "Bindings", None)  # absent on a tree from before it
    results: dict[str, dict[str, tuple[float, list[Any]]]] = {}
    for mode in modes:
        expressions.Bindings = NaiveBindings if mode == "naive" else current  # type: ignore[misc,assignment]
        try:
            results[mode] = run(args.requests, fence=1000)
        finally:
            expressions.Bindings = current  # type: ignore[misc]
    names = list(next(iter(results.values())))
    print(f"{'µs per request':<22}" + "".join(f"{mode:>12}" for mode in modes))
    for name in names:
        row = "".join(f"{results[mode][name][0]:>12.1f}" for mode in modes)
        if len(modes) == 2:
            naive, fast = (results[mode][name][0] for mode in modes)
            row += f"   x{naive / fast:.1f} faster"
        print(f"{name:<22}{row}")
    if len(modes) == 2:
        same = all(results["naive"][n][1] == results["bindings"][n][1] for n in names)
        print(f"outcomes identical in both modes (results and denial messages): {same}")
    sample = results[modes[-1]]["admit refused"][1][0]
    print(f"a refusal reads: {sample}")
    print(f"({args.requests} requests per scenario, one cluster, in-process, no HTTP)")


if __name__ == "__main__":
    main()
