"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/step.py ...` (see harness/shapes.py)."""
from harness.shapes import StepShape

__all__ = ["StepShape"]
