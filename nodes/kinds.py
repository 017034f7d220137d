"""The node kinds `python -m nodes run <kind>` knows, in the order the stack starts them.

Each is named, not imported: a node process imports only its own module, and
the lab imports none (the hook receiver's statistics take seconds to load).
"""
from __future__ import annotations

import importlib

from nodes.service import Node

NODE_KINDS: dict[str, str] = {
    "registry": "nodes.registry:RegistryNode",
    "database-adapter": "nodes.db_adapter:DatabaseAdapterNode",
    "reducer": "nodes.reducer:ReducerNode",
    "intelligence": "nodes.intelligence:IntelligenceNode",
    "stamping": "nodes.stamping:StampingNode",
    "service-registry": "nodes.service_registry:ServiceRegistryNode",
    "hook-receiver": "nodes.hooks:HookReceiverNode",
    "tool-capture-proxy": "nodes.tool_proxy:ToolCaptureProxyNode",
    "orchestrator": "nodes.orchestrator:OrchestratorNode",
}


def node_class(kind: str) -> type[Node]:
    """The `Node` subclass of one kind (KeyError for an unknown kind)."""
    module, name = NODE_KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)
