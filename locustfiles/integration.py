"""The integration services (seed 004): hook bursts, registry churn and proxied tool calls at once.

    locust -f locustfiles/integration.py --headless -u 12 -r 12 -t 30s --rate 30
"""
from adapters.bridge.adapter import BridgeAdapter
from adapters.bridge.users import HookUser, ProxyUser, RegistryUser
from harness.lifecycle import install

install(BridgeAdapter())

HookUser.weight = 2
RegistryUser.weight = 1
ProxyUser.weight = 1

__all__ = ["HookUser", "ProxyUser", "RegistryUser"]
