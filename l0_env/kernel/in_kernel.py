"""Code that runs INSIDE the sandboxed kernel (stdlib only; sent as source at kernel start).

It defines the agent's tools as Python objects: one function per tool the host names (e.g.
``web_search``, ``open_page``, ``submit_final_answer``: proxies with the tool's signature that call
the host through the tool bridge, a Unix socket) and ``notepad`` (state that lives here, in the
kernel). After every cell a post-run hook pushes the
notepad to the host when it changed, in the same round trip as the cell, so the host always holds
the last snapshot and can restore it after a kernel restart.

The host formats ``_l0_install(socket_path, notepad_state, tool_specs, files_dir)`` at the end of
this source, after defining the ``l0_files`` module (``in_kernel_files.py``: ``view_file``). The
task's files, read-only in ``files_dir``, appear as symlinks in the working directory
(``_l0_link_files``; again after every restart, whose fresh home has none).
"""

import json as _json
import socket as _socket
import sys as _sys
import time as _time

_MAX_RESPONSE_BYTES = 8 << 20
_STATUSES = ("todo", "doing", "done")


class ToolError(Exception):
    """A tool call failed; the message says why and what to do instead."""


class BudgetExhausted(ToolError):
    """This episode's budget for the tool is spent."""


_ERROR_TYPES = {
    "TypeError": TypeError,
    "ValueError": ValueError,
    "LookupError": LookupError,
    "KeyError": KeyError,
    "BudgetExhausted": BudgetExhausted,
    "ToolError": ToolError,
}


class _Bridge:
    """One request per connection, one JSON line each way: simple, and safe from threads."""

    def __init__(self, path):
        self._path = path

    def call(self, op, _timeout=120, **args):
        request = _json.dumps({"op": op, "args": args}).encode("utf-8") + b"\n"
        with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as sock:
            sock.settimeout(_timeout)  # past the host's own deadline for the tool
            try:
                for attempt in range(50):  # a full accept backlog (a loaded host): wait, up to ~5 s
                    try:
                        sock.connect(self._path)
                        break
                    except BlockingIOError:
                        if attempt == 49:
                            raise
                        _time.sleep(0.1)
                sock.sendall(request)
                chunks, size = [], 0
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > _MAX_RESPONSE_BYTES or chunk.endswith(b"\n"):
                        break
            except OSError as exc:
                raise ToolError(f"the tool service is unreachable ({exc}); try again") from None
        try:
            reply = _json.loads(b"".join(chunks).decode("utf-8"))
        except ValueError:
            raise ToolError("the tool service sent a malformed reply; try again") from None
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        raise _ERROR_TYPES.get(str(error.get("type")), ToolError)(error.get("message", "tool call failed"))


class Notepad:
    """Your notes, shown to you after every step (they survive context trimming).

    plan: ordered todo items, each {"text", "status"} with status "todo", "doing" or "done".
    facts: key -> value strings you have established. draft: free text (e.g. the answer draft).
    """

    def __init__(self, state=None):
        state = state if isinstance(state, dict) else {}
        self.plan = [dict(item) for item in state.get("plan", []) if isinstance(item, dict)]
        self.facts = dict(state.get("facts", {})) if isinstance(state.get("facts"), dict) else {}
        self.draft = str(state.get("draft", ""))

    def add_todo(self, text, status="todo"):
        """Append a plan item; returns its index."""
        self._check_status(status)
        self.plan.append({"text": str(text), "status": status})
        return len(self.plan) - 1

    def set_status(self, index, status):
        """Set plan item ``index`` to "todo", "doing" or "done"."""
        self._check_status(status)
        self._item(index)["status"] = status

    def update_todo(self, index, text):
        """Replace the text of plan item ``index``."""
        self._item(index)["text"] = str(text)

    def remove_todo(self, index):
        """Delete plan item ``index`` (later items move up)."""
        self._item(index)
        del self.plan[index]

    def add_fact(self, key, value):
        """Record (or overwrite) a fact."""
        self.facts[str(key)] = str(value)

    def remove_fact(self, key):
        """Forget a fact."""
        if str(key) not in self.facts:
            raise KeyError(f"no fact named {key!r}; facts are {sorted(self.facts)}")
        del self.facts[str(key)]

    def write_draft(self, text):
        """Replace the draft."""
        self.draft = str(text)

    def snapshot(self):
        return {
            "plan": [
                {"text": str(i.get("text", "")), "status": str(i.get("status", "todo"))} for i in self.plan
            ],
            "facts": {str(k): str(v) for k, v in self.facts.items()},
            "draft": str(self.draft),
        }

    def _item(self, index):
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"plan index must be an int, got {type(index).__name__}")
        if not -len(self.plan) <= index < len(self.plan):
            raise IndexError(f"plan has {len(self.plan)} items; index {index} is out of range")
        return self.plan[index]

    @staticmethod
    def _check_status(status):
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {status!r}")

    def __repr__(self):
        return f"Notepad(plan={self.plan!r}, facts={self.facts!r}, draft={self.draft!r})"


class _Omitted:
    """The default of an optional parameter that is left out of the call unless given."""

    def __repr__(self):
        return "..."


_OMITTED = _Omitted()


class _ToolGroup:
    """The tools of one server (``geo.distance(...)``); ``help(geo)`` lists them."""

    def __init__(self, name):
        self._name = name

    def __repr__(self):
        tools = [n for n in vars(self) if not n.startswith("_")]
        return f"<tools of {self._name}: {', '.join(sorted(tools))}>"


def _make_tool(bridge, spec):
    """A function with the tool's signature and docstring that calls the host with its arguments.

    Arguments are bound here (a wrong call is the usual TypeError) and checked on the host.
    """
    import inspect

    name = spec["name"]
    wait = spec.get("wait_s") or 120
    params = []
    for p in spec["params"]:
        kind = (
            inspect.Parameter.KEYWORD_ONLY
            if p.get("keyword_only")
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        default = _OMITTED if p.get("optional") else p.get("default", inspect.Parameter.empty)
        params.append(inspect.Parameter(p["name"], kind, default=default))
    signature = inspect.Signature(params)

    def tool(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{name}{signature}: {exc}") from None
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if v is not _OMITTED}
        try:
            _json.dumps(arguments)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name}: arguments must be JSON data (str, numbers, lists, dicts): {exc}"
            ) from None
        return bridge.call(name, _timeout=wait, **arguments)

    tool.__name__ = name.rpartition(".")[2]
    tool.__qualname__ = name
    tool.__doc__ = spec.get("doc") or None
    tool.__signature__ = signature  # type: ignore[attr-defined]  # what inspect and help() read
    return tool


_files = {"dir": None, "home": None}  # type: dict[str, str | None]


def _l0_link_files():
    """Link every task file into the home directory (the cwd at install). A name the agent already
    uses is left alone; the file stays readable in ``files_dir``."""
    import os

    files_dir, home = _files["dir"], _files["home"]
    if not files_dir or not home or not os.path.isdir(files_dir):
        return
    for name in sorted(os.listdir(files_dir)):
        link = os.path.join(home, name)
        if not os.path.lexists(link):
            try:
                os.symlink(os.path.join(files_dir, name), link)
            except OSError:  # home full or removed: view_file still finds the file by name
                continue


def _l0_install(socket_path, notepad_state, tool_specs=(), files_dir=None):
    import builtins
    import os

    from IPython import get_ipython

    bridge = _Bridge(socket_path)
    tools = {}  # type: dict[str, object]
    for spec in tool_specs:
        group, _, attr = spec["name"].rpartition(".")
        if group:  # "geo.distance": an attribute of the server's object
            setattr(tools.setdefault(group, _ToolGroup(group)), attr, _make_tool(bridge, spec))
        else:
            tools[attr] = _make_tool(bridge, spec)

    notepad = Notepad(notepad_state)
    last_pushed = [_json.dumps(notepad.snapshot(), sort_keys=True)]

    def push_notepad(*_args):
        try:
            encoded = _json.dumps(notepad.snapshot(), sort_keys=True)
        except Exception:  # a garbage value the agent stored: keep the last good snapshot
            return
        if encoded != last_pushed[0]:
            try:
                bridge.call("notepad", state=_json.loads(encoded))
            except ValueError as exc:  # the host refused it (too large, bad shape): say why, briefly
                print(exc, file=_sys.stderr)  # and again after every cell until it fits
                return
            last_pushed[0] = encoded

    _files.update(dir=files_dir, home=os.getcwd())
    _l0_link_files()
    shell = get_ipython()
    shell.user_ns.update(tools)
    shell.user_ns.update(
        notepad=notepad,
        ToolError=ToolError,
        BudgetExhausted=BudgetExhausted,
    )
    viewer = _sys.modules.get("l0_files")
    if viewer is not None and files_dir:
        shell.user_ns["view_file"] = viewer.make_view_file(files_dir)
    shell.events.register("post_run_cell", push_notepad)
    # IPython's default "Context" tracebacks analyse every frame: a RecursionError's 3,000 frames
    # take seconds of CPU (past the cell timeout on a loaded host: a kernel restart). Plain is fast.
    shell.InteractiveTB.set_mode(mode="Plain")
    builtins.input = _no_input


def _no_input(*_args, **_kwargs):
    raise RuntimeError("input() is not available: nobody is at the keyboard; use variables instead")
