"""The README documents every setting and every failoverctl command."""

from __future__ import annotations

from pathlib import Path

from producers.cli import app
from workers.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readmes_table() -> None:
    missing = [name for name in Settings.model_fields if f"`FAILOVER_{name.upper()}" not in README]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    groups = [g.name for g in app.registered_groups]
    missing = [name for name in [*commands, *groups] if f"failoverctl {name}" not in README]
    assert missing == []
