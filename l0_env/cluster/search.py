"""Search for a cluster: one retrieval server per node, shared by every env on that node.

An embedded search setting (None/"bm25", "dense", "hybrid", or a mapping naming one of them)
would make every shard process load its own index (and, for dense search, its own encoder). On a
cluster the driver instead starts one :class:`NodeSearchServer` actor per node that hosts envs,
pinned to that node; it builds or loads the index (memory-mapped from the node's cache folder)
and serves :mod:`l0_env.tools.search_server`'s Search-R1 API on the node's loopback, and the
node's envs use it as ``search="http://127.0.0.1:<port>"``. The first node's server is started
alone, so on a shared cache folder (NFS) the index is built once and the other nodes load it;
with node-local caches each node builds it once. Remote settings (an ``http(s)://`` server,
"serper") are used by the envs as they are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

EMBEDDED = ("bm25", "dense", "hybrid")


def is_embedded(search: Any) -> bool:
    """Whether ``search`` names an index the env process would build or load itself."""
    if search is None:
        return True
    if isinstance(search, str):
        return search in EMBEDDED
    if isinstance(search, Mapping):
        return search.get("backend", "bm25") in EMBEDDED
    return False


class NodeSearchServer:
    """A retrieval server (``l0_env.tools.search_server``) on this node's 127.0.0.1, in a thread.

    Args:
        search: The embedded setting (see :func:`is_embedded`).
        corpus: The passage file (None: the bundled passages); it must be readable on the node.
        start_timeout: Seconds for uvicorn to start listening once the index is loaded.
    """

    def __init__(self, search: Any, corpus: str | None, start_timeout: float = 60.0) -> None:
        import uvicorn

        from ..tools import make_search_backend
        from ..tools.search_server import create_app

        spec = dict(search) if isinstance(search, Mapping) else {"backend": search or "bm25"}
        name = str(spec.get("backend", "bm25"))
        self._backend = make_search_backend(spec, corpus=corpus, shared=False)  # build or load, up front
        app = create_app(self._backend, name=name, corpus=corpus)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="l0-node-search", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the node's search server did not start")
            time.sleep(0.02)
        self._port = int(self._server.servers[0].sockets[0].getsockname()[1])

    def url(self) -> str:
        """Where this node's envs reach it (loopback: only processes on this node can)."""
        return f"http://127.0.0.1:{self._port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._backend.close()
