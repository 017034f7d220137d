"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/burst_recovery.py ...` (see harness/shapes.py)."""
from harness.shapes import BurstRecoveryShape

__all__ = ["BurstRecoveryShape"]
