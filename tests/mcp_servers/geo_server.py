"""A real MCP server for the tests, written with the official SDK: stdio by default,
streamable HTTP with ``--http PORT`` (on 127.0.0.1).

Tools: ``distance`` (typed arguments), ``capital`` (text and structured content), ``fail`` (a tool
error), ``big`` (5 MB of text), ``huge`` (100 MB), ``sleep`` (hangs), ``crash`` (the process
exits), and ``bad-name`` (not a Python identifier: the env skips it).
"""

from __future__ import annotations

import math
import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("geo", log_level="CRITICAL")  # tool errors are the tests' point, not noise

CITIES = {"paris": (48.8566, 2.3522), "berlin": (52.52, 13.405), "rome": (41.9028, 12.4964)}


@server.tool()
def distance(a: str, b: str, unit: str = "km") -> dict:
    """Great-circle distance between two cities (paris, berlin, rome)."""
    (la1, lo1), (la2, lo2) = CITIES[a.lower()], CITIES[b.lower()]
    p1, p2, dl = math.radians(la1), math.radians(la2), math.radians(lo2 - lo1)
    km = 6371 * math.acos(math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl))
    return {"distance": round(km if unit == "km" else km / 1.609, 1), "unit": unit}


@server.tool()
def capital(country: str) -> str:
    """The capital of a country."""
    return {"france": "Paris", "germany": "Berlin", "italy": "Rome"}.get(country.lower(), "unknown")


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason."""
    raise ValueError(f"failed on purpose: {reason}")


@server.tool()
def big() -> str:
    """Returns 5 MB of text."""
    return "x" * 5_000_000


@server.tool()
def huge() -> str:
    """Returns 100 MB of text."""
    return "x" * 100_000_000


@server.tool()
def sleep(seconds: float) -> str:
    """Sleeps."""
    time.sleep(seconds)
    return "awake"


@server.tool()
def crash() -> str:
    """Ends the server process."""
    os._exit(3)


@server.tool(name="bad-name")
def bad_name() -> str:
    """A name the kernel cannot use."""
    return "?"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
