"""Fault targets: a local process of the stack, a bridgestorm container, a Toxiproxy link.

Each target only touches what is bridgestorm's own and raises `ChaosRefused`
for anything else, so a typo in an experiment can never signal a stranger's
process or container.
"""


class ChaosRefused(Exception):
    """The target is not bridgestorm's own (not in the stack's state file, not labelled)."""


class TargetError(Exception):
    """The target exists but the action could not be done (not running, no launch spec, ...)."""
