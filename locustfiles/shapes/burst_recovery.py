"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/burst_recovery.py ...` (see support/shapes.py)."""
from locustfiles.support.shapes import BurstRecoveryShape

__all__ = ["BurstRecoveryShape"]
