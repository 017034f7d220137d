"""Workflows: submit (202), completion on the bus and through GET, with and without intelligence.

    locust -f locustfiles/workflows.py --headless -u 10 -r 10 -t 15s
"""
from locustfiles.support.run import install
from locustfiles.support.users import WorkflowUser

install("workflow")

__all__ = ["WorkflowUser"]
