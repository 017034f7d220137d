"""The node kinds `python -m nodes run <kind>` knows, in the order the stack starts them."""
from __future__ import annotations

from nodes.db_adapter import DatabaseAdapterNode
from nodes.intelligence import IntelligenceNode
from nodes.orchestrator import OrchestratorNode
from nodes.reducer import ReducerNode
from nodes.registry import RegistryNode
from nodes.service import Node
from nodes.stamping import StampingNode

NODE_KINDS: dict[str, type[Node]] = {
    "registry": RegistryNode,
    "database-adapter": DatabaseAdapterNode,
    "reducer": ReducerNode,
    "intelligence": IntelligenceNode,
    "stamping": StampingNode,
    "orchestrator": OrchestratorNode,
}
