"""One simulated Kubernetes cluster: store, HTTP API server, controllers and fault knobs together.

``SandboxCluster`` starts an API server on 127.0.0.1 (an ephemeral port unless one is given) and a
controller thread, pre-installs the third-party CRDs the orchestrator needs, and stops everything it
started (server threads joined, sockets closed) on :meth:`stop` or leaving its ``with`` block. Its
"down" switch closes the listening socket and cuts open connections while keeping every object, and
bringing it back listens on the same port again. This module wires parts together; it must not
implement API semantics itself.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from sandbox.kube.api import ResourceApi, WatchSettings
from sandbox.kube.controllers import Controllers
from sandbox.kube.faults import FaultKnobs
from sandbox.kube.kinds import KindRegistry, default_crds
from sandbox.kube.server import SandboxHTTPServer
from sandbox.kube.store import ObjectStore

_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class SandboxCluster:
    """A fake cluster named ``name``; use as a context manager or call :meth:`start`/:meth:`stop`.

    Args:
        name: the cluster (and kubeconfig context) name.
        host/port: where to listen; port 0 picks a free port once, then keeps it across down/up.
        token: if set, requests must carry ``Authorization: Bearer <token>`` (else 401).
        history_limit: watch events kept; a watch from an older resourceVersion gets 410 Gone.
        preinstall_crds: install the Istio, Flux, csi-addons and Failover/FailoverGroup CRDs.
        run_controllers: start the controller thread (``controllers.run_once()`` still works if not).
        bookmark_interval: seconds between BOOKMARK events on idle watches that asked for them.
        controller_options: keyword arguments for :class:`~sandbox.kube.controllers.Controllers`.
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
        run_controllers: bool = True,
        bookmark_interval: float = 1.0,
        **controller_options: Any,
    ) -> None:
        self.name = name
        self.host = host
        self.token = token
        self.store = ObjectStore(KindRegistry(), history_limit=history_limit)
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
            for crd in default_crds():
                self.store.create("customresourcedefinitions", crd)

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
        api = ResourceApi(self.store, self.faults, self.watch_settings, lambda: False)
        server = SandboxHTTPServer((self.host, self._port), api, self.token)
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

    def kubeconfig(self) -> dict[str, Any]:
        """This cluster's kubeconfig entries (cluster, user, context, all named after the cluster)."""
        user: dict[str, Any] = {"token": self.token} if self.token else {}
        return {
            "cluster": {"name": self.name, "cluster": {"server": self.url}},
            "user": {"name": self.name, "user": user},
            "context": {"name": self.name, "context": {"cluster": self.name, "user": self.name}},
        }

    def __repr__(self) -> str:
        state = "down" if self.is_down else "up" if self._started else "stopped"
        return f"SandboxCluster({self.name!r}, {self.url}, {state})"
