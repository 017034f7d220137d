"""The user classes: simulated nodes and raw event batches (Kafka), stamping clients and workflow clients (HTTP)."""
from locustfiles.support.users.events import EventBatchUser
from locustfiles.support.users.node import NodeUser
from locustfiles.support.users.stamping import StampingUser
from locustfiles.support.users.workflow import WorkflowUser

__all__ = ["EventBatchUser", "NodeUser", "StampingUser", "WorkflowUser"]
