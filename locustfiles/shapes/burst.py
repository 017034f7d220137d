"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/burst.py ...` (see harness/shapes.py)."""
from harness.shapes import BurstShape

__all__ = ["BurstShape"]
