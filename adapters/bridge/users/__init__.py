"""The bridge's users: simulated nodes and raw event batches (Kafka), stamping and workflow clients (HTTP),
and the integration services' hook, registry and proxy clients (HTTP)."""
from adapters.bridge.users.events import EventBatchUser
from adapters.bridge.users.integration import HookUser, ProxyUser, RegistryUser
from adapters.bridge.users.node import NodeUser
from adapters.bridge.users.stamping import StampingUser
from adapters.bridge.users.workflow import WorkflowUser

__all__ = ["EventBatchUser", "HookUser", "NodeUser", "ProxyUser", "RegistryUser", "StampingUser", "WorkflowUser"]
