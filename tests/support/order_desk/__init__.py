"""A second system under test, not one of our nodes: the order desk (service, adapter, locustfile).

It exists to show that the harness is not tied to bridgestorm's own nodes:
tests/load/test_own_system.py drives it through the same users' base
classes, observer, drain, loss accounting and report, with an adapter of its
own, as a team would point bridgestorm at their service (docs/own-system.md).
"""
