"""The README documents every setting and every failoverctl command; the docs name files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from producers.cli import app
from workers.settings import Settings

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
DOCS = [
    "README.md",
    "docs/API.md",
    "docs/ARCHITECTURE.md",
    "docs/DESIGN-ORIGIN.md",
    "docs/PERFORMANCE-HISTORY.md",
]


def test_every_setting_is_in_the_readmes_table() -> None:
    missing = [name for name in Settings.model_fields if f"`FAILOVER_{name.upper()}" not in README]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    commands = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    groups = [g.name for g in app.registered_groups]
    missing = [name for name in [*commands, *groups] if f"failoverctl {name}" not in README]
    assert missing == []


@pytest.mark.parametrize("name", DOCS)
def test_the_docs_name_only_files_and_links_that_exist(name: str) -> None:
    text = (ROOT / name).read_text()
    paths = re.findall(r"`((?:fsm|workers|producers|sandbox|deploy|tests|docs|\.ci)/[\w./-]*)`", text)
    links = re.findall(r"\]\(([^)#:]+)\)", text)
    missing = [p for p in paths if not (ROOT / p).exists()]
    missing += [link for link in links if not ((ROOT / name).parent / link).exists()]
    assert missing == []


def test_every_concept_of_the_original_design_has_a_row_in_docs() -> None:
    origin = (ROOT / "docs/DESIGN-ORIGIN.md").read_text()
    rows = [line.split("|")[1].strip() for line in origin.splitlines() if line.startswith("| ")]
    concepts = ["Engine", "Factory", "Tasks", "DependencyInjector", "ManagerAdapter", "Workflow context"]
    concepts += ["Stages", "Error handling", "Extending"]
    assert [c for c in concepts if not any(row.startswith(c) for row in rows)] == []
    assert "docs/DESIGN-ORIGIN.md" in README
