"""The `dataplane` command line (main.py)."""
