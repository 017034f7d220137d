"""System adapters: how the harness talks to one system under test (see harness/adapter.py, docs/own-system.md)."""
