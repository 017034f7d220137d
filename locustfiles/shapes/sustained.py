"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/sustained.py ...` (see support/shapes.py)."""
from locustfiles.support.shapes import SustainedShape

__all__ = ["SustainedShape"]
