"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/burst.py ...` (see support/shapes.py)."""
from locustfiles.support.shapes import BurstShape

__all__ = ["BurstShape"]
