"""The chaos stack (sandbox clusters, moto, real Redis and Celery workers, FAST timing, a 4 s lease),
reused for operator controls of runs in flight."""

from tests.chaos.conftest import make_stack

__all__ = ["make_stack"]
