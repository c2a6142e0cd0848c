"""MCP servers as tools: each server's tools become ``<server>.<tool>(...)`` in the kernel.

``gym.make("L0Notebook-v0", mcp_servers={"geo": {"command": "python", "args": ["geo_server.py"]},
"docs": "http://127.0.0.1:8000/mcp"})`` starts the stdio servers (a process each, on the host,
outside the sandbox, like search) or connects to streamable-HTTP ones, lists their tools and makes
each a :class:`l0_env.tool.Tool` (keyword arguments from its input schema, checked with
``jsonschema``). A call's result comes back as text, or as ``{"text", "structured"}`` where the
server gives structured content; a tool's own error (``isError``) reaches the agent as a
``ToolError`` with the server's text; a server that died or hangs is a ``ToolError`` too, and the
episode goes on. ``env.close()`` stops what the env started: no process is left.

Uses the official ``mcp`` SDK (``pip install 'l0-gym[mcp]'``). Each server gets its own event-loop
thread holding one client session; calls from the tool service's threads are scheduled on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import functools
import logging
import threading
from collections.abc import Mapping
from typing import Any

from .kernel.bridge import ToolCallError
from .kernel.tool_stubs import check_name
from .tool import Tool

__all__ = ["MCPServerConnection", "MCPStartError", "check_mcp_servers", "result_value"]

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2_000
_STDIO_KEYS = {"command", "args", "env", "cwd"}


class MCPStartError(ValueError):
    """An MCP server could not be started, reached or listed."""


def check_mcp_servers(servers: Any) -> dict[str, Any]:
    """``{name: spec}``: a spec is a URL (streamable HTTP), ``{"url": ...}``, or ``{"command",
    "args", "env", "cwd"}`` (stdio). Bad names or specs are a ValueError naming them."""
    if servers is None:
        return {}
    if not isinstance(servers, Mapping):
        raise ValueError(f"mcp_servers must be a mapping of name to server, got {type(servers).__name__}")
    out: dict[str, Any] = {}
    for name, spec in servers.items():
        check_name(name, "mcp_servers: server name")
        if isinstance(spec, Mapping) and set(spec) == {"url"}:
            spec = spec["url"]
        if isinstance(spec, str):
            if not spec.startswith(("http://", "https://")):
                raise ValueError(f"mcp_servers[{name!r}]: a URL must be http(s)://..., got {spec!r}")
            out[name] = spec
            continue
        if not isinstance(spec, Mapping) or not isinstance(spec.get("command"), str):
            raise ValueError(
                f"mcp_servers[{name!r}] must be a URL or {{'command': str, 'args': [...], 'env': {{...}}, "
                f"'cwd': str}}, got {spec!r}"
            )
        unknown = sorted(set(spec) - _STDIO_KEYS)
        if unknown:
            raise ValueError(
                f"mcp_servers[{name!r}]: unknown key {unknown[0]!r} (known: {sorted(_STDIO_KEYS)})"
            )
        args, env = spec.get("args", []), spec.get("env")
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
            raise ValueError(f"mcp_servers[{name!r}]['args'] must be a list of str")
        if env is not None and (
            not isinstance(env, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise ValueError(f"mcp_servers[{name!r}]['env'] must map str to str")
        out[name] = dict(spec)
    return out


def result_value(label: str, result: Any) -> Any:
    """An MCP ``CallToolResult`` as the agent gets it: text, or ``{"text", "structured"}``."""
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {block.mime_type}, about {len(block.data) * 3 // 4:,} bytes; not shown]")
        elif kind == "resource_link":
            parts.append(f"[resource: {block.uri}]")
        elif kind == "resource":
            text = getattr(block.resource, "text", None)
            parts.append(
                text if isinstance(text, str) else f"[resource: {block.resource.uri}; binary, not shown]"
            )
        else:
            parts.append(f"[{kind or 'unknown'} content; not shown]")
    text = "\n".join(parts)
    if result.is_error:
        cut = text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"
        raise ToolCallError("ToolError", f"{label} reported an error: {cut}")
    if result.structured_content is not None:
        return {"text": text, "structured": result.structured_content}
    return text


class MCPServerConnection:
    """One MCP server for one env: started (stdio) or reached (HTTP), its tools listed.

    Args:
        name: The kernel's name for the server (``geo`` → ``geo.<tool>(...)``).
        spec: A URL, or ``{"command", "args", "env", "cwd"}`` (see :func:`check_mcp_servers`).
        timeout: Seconds a tool call may take (the SDK's read timeout; the tool service's deadline
            is the same).
        startup_timeout: Seconds to start, initialise and list tools.

    Raises:
        MCPStartError: The server did not start, answer or list its tools in time.
    """

    def __init__(self, name: str, spec: Any, *, timeout: float, startup_timeout: float = 60.0) -> None:
        try:
            from mcp import Client, StdioServerParameters
        except ImportError as exc:
            raise ImportError("mcp_servers needs the MCP SDK: pip install 'l0-gym[mcp]'") from exc
        self.name = name
        self.timeout = timeout
        if isinstance(spec, str):
            self.target: Any = spec
        else:
            self.target = StdioServerParameters(
                command=spec["command"],
                args=list(spec.get("args", [])),
                env=spec.get("env"),
                cwd=spec.get("cwd"),
            )
        self._client_cls = Client
        self._client: Any = None
        self._closed = False
        self._failure: BaseException | None = None
        self._listed: cf.Future[list[Any]] = cf.Future()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"l0-mcp-{name}", daemon=True)
        self._thread.start()
        self._session = asyncio.run_coroutine_threadsafe(self._hold(), self._loop)
        try:
            self.listed = self._listed.result(timeout=startup_timeout)
        except Exception as exc:
            self.close()
            what = "did not answer in time" if isinstance(exc, cf.TimeoutError) else f"failed: {exc!r}"
            raise MCPStartError(f"MCP server {name!r} ({self._describe()}) {what}") from None

    def _describe(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return " ".join([self.target.command, *self.target.args])[:200]

    async def _hold(self) -> None:
        """Open the session, list the tools, keep the session until :meth:`close`."""
        self._stop = asyncio.Event()
        try:
            async with self._client_cls(self.target, read_timeout_seconds=self.timeout) as client:
                tools, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self._client = client
                self._listed.set_result(tools)
                await self._stop.wait()
        except BaseException as exc:  # the server died, the transport broke: calls get a ToolError
            self._failure = exc
            if not self._listed.done():
                self._listed.set_exception(exc)
            if not isinstance(exc, (Exception, asyncio.CancelledError)):
                raise

    def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool`` and return its value for the agent (see :func:`result_value`)."""
        label = f"{self.name}.{tool}"
        if self._closed or self._client is None or self._session.done() or self._failure is not None:
            why = f" ({type(self._failure).__name__})" if self._failure is not None else ""
            raise ToolCallError("ToolError", f"{label}: the MCP server {self.name!r} is not running{why}")
        future = asyncio.run_coroutine_threadsafe(self._client.call_tool(tool, arguments), self._loop)
        try:
            result = future.result(timeout=self.timeout + 5)
        except cf.TimeoutError:
            future.cancel()
            raise ToolCallError(
                "ToolError", f"{label} timed out after {self.timeout:g}s; try again"
            ) from None
        except ToolCallError:
            raise
        except Exception as exc:
            log.warning("MCP call %s failed: %r", label, exc)
            if self._session.done() or "Connection closed" in str(exc):
                self._failure = exc  # the server exited or the transport broke: no later call can work
                raise ToolCallError(
                    "ToolError", f"{label}: the MCP server {self.name!r} stopped ({type(exc).__name__})"
                ) from None
            raise ToolCallError("ToolError", f"{label} failed ({type(exc).__name__}); try again") from None
        return result_value(label, result)

    def _call_with_keywords(self, tool: str, /, **arguments: Any) -> Any:
        return self.call(tool, arguments)

    def tools(self, *, budget: int | None = None) -> list[Tool]:
        """The server's tools as :class:`Tool` s named ``<server>.<tool>``; a tool the kernel
        cannot offer (a name or parameter that is not a Python identifier) is skipped with a warning."""
        out = []
        for spec in self.listed:
            name = f"{self.name}.{spec.name}"
            try:
                out.append(
                    Tool.from_schema(
                        name,
                        functools.partial(self._call_with_keywords, spec.name),
                        description=spec.description or "",
                        input_schema=spec.input_schema,
                        budget=budget,
                        timeout=self.timeout,
                    )
                )
            except ValueError as exc:
                log.warning("MCP server %r: tool %r skipped: %s", self.name, spec.name, exc)
        return out

    def close(self) -> None:
        """End the session; a stdio server's process is stopped (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(Exception):
            self._session.result(timeout=15)
        if not self._session.done():
            self._loop.call_soon_threadsafe(self._session.cancel)
            with contextlib.suppress(Exception):
                self._session.result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
