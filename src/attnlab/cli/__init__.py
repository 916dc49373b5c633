"""The `attnlab` command line (typer + rich)."""
