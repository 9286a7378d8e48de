"""The chaos stack (sandbox clusters, moto, real Redis and Celery workers, FAST timing, a 4 s lease),
reused for operator controls of runs in flight."""

import pytest

from tests.chaos.conftest import make_stack

__all__ = ["make_stack", "wide_terminal"]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """failoverctl's tables and messages unabridged and unwrapped, in processes it starts too."""
    monkeypatch.setenv("COLUMNS", "300")
