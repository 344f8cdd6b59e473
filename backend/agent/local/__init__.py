"""The built-in offline model: reads task requests, calls the MCP tools, confirms results."""
