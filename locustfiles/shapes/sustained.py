"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/sustained.py ...` (see harness/shapes.py)."""
from harness.shapes import SustainedShape

__all__ = ["SustainedShape"]
