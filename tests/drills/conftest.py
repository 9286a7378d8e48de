"""The drills run on the autofailover world: sandbox clusters, moto DynamoDB, Redis, a real worker."""

from tests.autofailover.conftest import controllers, group_spec, timing, world

__all__ = ["controllers", "group_spec", "timing", "world"]
