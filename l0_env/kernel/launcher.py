"""Start sandbox processes from one thread that lives as long as the process.

bubblewrap's ``--die-with-parent`` is ``PR_SET_PDEATHSIG``, which fires when the *thread* that
forked the child exits, not the process. Kernels started from short-lived threads (the warm pool,
a thread pool) would be killed as soon as that thread returns. So every sandbox is spawned here,
from a daemon thread that never exits while the process runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue
import subprocess
import threading
from typing import Any

_lock = threading.Lock()
_requests: queue.SimpleQueue | None = None
_owner_pid = -1


def _serve(requests: queue.SimpleQueue) -> None:
    while True:
        future, args, kwargs = requests.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(subprocess.Popen(*args, **kwargs))
        except BaseException as exc:  # handed to the caller, who raises it
            future.set_exception(exc)


def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(*args, **kwargs)``, run on the process-lifetime launcher thread."""
    global _requests, _owner_pid
    with _lock:
        if _requests is None or _owner_pid != os.getpid():  # first use, or first use after a fork
            _requests, _owner_pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=_serve, args=(_requests,), name="l0-launcher", daemon=True).start()
        requests = _requests
    future: cf.Future = cf.Future()
    requests.put((future, args, kwargs))
    return future.result()
