"""Fault-injection tests: a private PostgreSQL cluster, an MCP subprocess and a cuttable proxy."""
