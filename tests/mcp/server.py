"""The MCP server tests/outbound.rs talks to, built with the official
Python SDK (`mcp`, pinned in requirements.txt; .ci/run installs it).

Binds 127.0.0.1 on an ephemeral port, prints `port=<n>` once listening and
serves Streamable HTTP at /mcp until killed. Tools:
- `search(task)`: `results for <task>`;
- `weather(task)`: `sunny where <task>`;
- `bulky(task)`: 64 KiB of text, over the test grant's result cap;
- `secret_tool(task)`: never granted by the tests.
"""

import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("agentrouter-test-tools")


@server.tool()
def search(task: str) -> str:
    """Search the test corpus."""
    return f"results for {task}"


@server.tool()
def weather(task: str) -> str:
    """Tell the weather."""
    return f"sunny where {task}"


@server.tool()
def bulky(task: str) -> str:
    """Answer at length."""
    return "x" * 65536


@server.tool()
def secret_tool(task: str) -> str:
    """A tool no test grants."""
    return "you should not see this"


def main() -> None:
    stateless = "--stateless" in sys.argv
    app = server.streamable_http_app(stateless_http=stateless)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"port={sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
