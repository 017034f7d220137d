"""Test-only helpers that talk to real parts: a bus watcher, an echo server, and a second system under test."""
