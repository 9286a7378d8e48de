"""The drills run on the autofailover world: sandbox clusters, moto DynamoDB, Redis, a real worker."""

from tests.autofailover.conftest import group_spec, world

__all__ = ["group_spec", "world"]
