"""One simulated Kubernetes cluster: store, HTTP API server, controllers and fault knobs together.

``SandboxCluster`` starts an API server on 127.0.0.1 (an ephemeral port unless one is given) and a
controller thread, pre-installs the third-party CRDs the orchestrator needs and the project's fence
policies (deploy/fencing, enforced by the cluster's admission like on a real one) and the
ServiceAccounts, ClusterRoles and bindings of deploy/rbac (enforced by its RBAC authorizer, rbac.py),
knows its users (one per component of deploy/rbac: the worker, whose token its kubeconfig carries,
the watcher, the health checker and an operator; an admin, and any a test adds:
:meth:`SandboxCluster.add_user`), records per user which verbs it was allowed
(:meth:`SandboxCluster.used`), and stops everything it started (server threads
joined, sockets closed) on :meth:`stop` or leaving its ``with`` block. Its "down" switch closes the
listening socket and cuts open connections while keeping every object, and bringing it back listens
on the same port again. This module wires parts together; it must not
implement API semantics itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import TracebackType
from typing import Any

from sandbox.kube.admission import PolicyAdmission
from sandbox.kube.api import ResourceApi, WatchSettings
from sandbox.kube.controllers import Controllers
from sandbox.kube.faults import FaultKnobs
from sandbox.kube.identity import USERNAMES, WORKER, UserInfo, Users
from sandbox.kube.kinds import KindRegistry, default_crds
from sandbox.kube.manifests import fencing_manifests, project_crds, rbac_manifests
from sandbox.kube.rbac import Authorizer, Use
from sandbox.kube.server import SandboxHTTPServer
from sandbox.kube.store import ObjectStore

_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class SandboxCluster:
    """A fake cluster named ``name``; use as a context manager or call :meth:`start`/:meth:`stop`.

    Args:
        name: the cluster (and kubeconfig context) name.
        host/port: where to listen; port 0 picks a free port once, then keeps it across down/up.
        token: the worker ServiceAccount's bearer token. If set, every request must carry a known
            token (else 401); if None, a random one is made and requests without credentials are
            also served, as ``system:anonymous`` (an unknown token is still a 401).
        history_limit: watch events kept; a watch from an older resourceVersion gets 410 Gone.
        preinstall_crds: install the Istio, Flux, csi-addons and Failover/FailoverGroup CRDs (the
            latter two as shipped in deploy/crds when run from a checkout: their defaults and rules).
        install_fencing: install the ValidatingAdmissionPolicies of the repository's deploy/fencing.
        install_rbac: install deploy/rbac and authorize every request against the RBAC objects in
            the store; if False every authenticated request is allowed (uses are still recorded).
        run_controllers: start the controller thread (``controllers.run_once()`` still works if not).
        bookmark_interval: seconds between BOOKMARK events on idle watches that asked for them.
        controller_options: keyword arguments for :class:`~sandbox.kube.controllers.Controllers`
            (delays, faults; ``full_passes=True`` for the old pass-over-everything controllers).
    """

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        history_limit: int = 1000,
        preinstall_crds: bool = True,
        install_fencing: bool = True,
        install_rbac: bool = True,
        run_controllers: bool = True,
        bookmark_interval: float = 1.0,
        **controller_options: Any,
    ) -> None:
        self.name = name
        self.host = host
        self.users = Users(token, allow_anonymous=token is None)
        self.store = ObjectStore(KindRegistry(), history_limit=history_limit)
        self.admission = PolicyAdmission(self.store)
        self.authorizer = Authorizer(self.store, enabled=install_rbac)
        self.faults = FaultKnobs()
        self.watch_settings = WatchSettings(bookmark_interval=bookmark_interval)
        self.controllers = Controllers(self.store, **controller_options)
        self._run_controllers = run_controllers
        self._port = port
        self._server: SandboxHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._started = False
        for namespace in _SYSTEM_NAMESPACES:
            self.store.create("namespaces", {"metadata": {"name": namespace}})
        if preinstall_crds:
            shipped = {crd["metadata"]["name"]: crd for crd in project_crds()}
            for crd in default_crds():
                self.store.create("customresourcedefinitions", shipped.get(crd["metadata"]["name"], crd))
        if install_fencing:
            for manifest in fencing_manifests():
                self.store.put(manifest)
        if install_rbac:
            for manifest in rbac_manifests():
                self.store.put(manifest)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SandboxCluster:
        with self._lock:
            if self._started:
                return self
            self._listen()
            if self._run_controllers:
                self.controllers.start()
            self._started = True
            return self

    def stop(self) -> None:
        """Stop the controllers and the server; objects stay in :attr:`store`."""
        with self._lock:
            self.controllers.stop()
            self._close_server()
            self._started = False

    def __enter__(self) -> SandboxCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _listen(self) -> None:
        api = ResourceApi(
            self.store,
            self.faults,
            self.watch_settings,
            lambda: False,
            self.admission,
            authorizer=self.authorizer,
        )
        server = SandboxHTTPServer((self.host, self._port), api, self.users)
        api.stopped = server.stopping.is_set
        self._port = server.port
        self._server = server
        self._serve_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-kube-{self.name}",
            daemon=True,
        )
        self._serve_thread.start()

    def _close_server(self) -> None:
        server, thread = self._server, self._serve_thread
        self._server, self._serve_thread = None, None
        if server is None:
            return
        server.stopping.set()
        self.store.wake()
        server.shutdown()
        if thread is not None:
            thread.join()
        server.drop_connections()
        server.server_close()  # joins every handler thread (block_on_close)

    # --- the "down" switch ----------------------------------------------------------------------

    def set_down(self, down: bool) -> None:
        """Take the site off the network (connections refused, state kept) or bring it back."""
        with self._lock:
            if down and self._server is not None:
                self._close_server()
            elif not down and self._server is None and self._started:
                self._listen()

    @property
    def is_down(self) -> bool:
        return self._started and self._server is None

    # --- addresses ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    # --- identities -----------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The worker ServiceAccount's token (the one the product uses)."""
        return self.users.token(WORKER)

    def add_user(
        self,
        username: str,
        groups: tuple[str, ...] | list[str] = ("system:authenticated",),
        *,
        alias: str = "",
    ) -> str:
        """Register a user (a person, another ServiceAccount) and return its bearer token."""
        return self.users.add(username, groups, alias=alias or None)

    def used(self, user: str) -> Counter[Use]:
        """The requests ``user`` (a component alias such as ``watcher``, or a username) was allowed."""
        return self.authorizer.used(USERNAMES.get(user, user))

    def user(self, token: str) -> UserInfo | None:
        """Who ``token`` authenticates as (None if nobody)."""
        return self.users.authenticate(f"Bearer {token}")

    def kubeconfig(self, user: str = WORKER, *, context: str | None = None) -> dict[str, Any]:
        """This cluster's kubeconfig entries (cluster, user, context) acting as ``user``.

        ``user`` is ``worker`` (default), ``admin``, an alias or a username given to :meth:`add_user`.
        Entries are named after the cluster for the worker (what the product's kubeconfig holds) and
        ``<cluster>-<user>`` otherwise, unless ``context`` names them.
        """
        name = context or (self.name if user == WORKER else f"{self.name}-{user}")
        return {
            "cluster": {"name": name, "cluster": {"server": self.url}},
            "user": {"name": name, "user": {"token": self.users.token(user)}},
            "context": {"name": name, "context": {"cluster": name, "user": name}},
        }

    def api_client(self, user: str = WORKER) -> Any:
        """A ``kubernetes.client.ApiClient`` acting as ``user`` (close it when done)."""
        from kubernetes import config

        entries = self.kubeconfig(user)
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [entries["cluster"]],
            "users": [entries["user"]],
            "contexts": [entries["context"]],
            "current-context": entries["context"]["name"],
        }
        return config.new_client_from_config_dict(document)

    def __repr__(self) -> str:
        state = "down" if self.is_down else "up" if self._started else "stopped"
        return f"SandboxCluster({self.name!r}, {self.url}, {state})"
