"""Add to a locustfile: `locust -f locustfiles/introspection.py,locustfiles/shapes/step.py ...` (see support/shapes.py)."""
from locustfiles.support.shapes import StepShape

__all__ = ["StepShape"]
