"""The user classes: simulated nodes (Kafka), stamping clients and workflow clients (HTTP)."""
from locustfiles.support.users.node import NodeUser
from locustfiles.support.users.stamping import StampingUser
from locustfiles.support.users.workflow import WorkflowUser

__all__ = ["NodeUser", "StampingUser", "WorkflowUser"]
