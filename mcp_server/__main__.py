"""python -m mcp_server [--transport http|stdio] [--host] [--port]"""

from backend.cli import main

if __name__ == "__main__":
    main(["mcp", *__import__("sys").argv[1:]])
