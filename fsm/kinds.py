"""Placeholder: replaced by the per-kind rules on merge."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ACTIVE = "active"
    PASSIVE = "passive"
