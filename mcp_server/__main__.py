"""python -m mcp_server [--transport http|stdio] [--host] [--port] [--workers]

The same as `todo-assistant mcp`: without --transport, MCP_TRANSPORT decides (default http).
"""

import sys

from backend.cli import main

if __name__ == "__main__":
    main(["mcp", *sys.argv[1:]])
