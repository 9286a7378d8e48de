"""The transition table per mode, as a ``transitions`` machine over :class:`fsm.plan.State`.

Pure: the machine only answers "from this state, this event leads there". Following transitions'
own warning (a state change is not rolled back when a later callback raises), no callback does
I/O; the only callback is a condition that reads the cursor. ``auto_transitions=False`` so that no
``to_X`` shortcut can jump past the plan.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from transitions import Machine, MachineError

from fsm.models import FailoverMode
from fsm.plan import SEQUENCES, PlanKind, State, state_of


class Trigger:
    START = "start"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_SKIPPED = "step_skipped"
    STEP_WAITING = "step_waiting"
    STEP_RETRYING = "step_retrying"
    STEP_FAILED = "step_failed"
    UNDO_FINISHED = "undo_finished"


@dataclass
class _Cursor:
    """The model a machine moves: a state, and whether compensation actions remain."""

    state: State
    more_undo: bool = False

    def has_more_undo(self) -> bool:
        return self.more_undo


def transition_table(mode: FailoverMode | PlanKind) -> list[dict[str, Any]]:
    """The machine's transitions as plain data (also what ``failoverctl graph`` draws)."""
    states = [state_of(step) for step, _stage, _side in SEQUENCES[PlanKind.of(mode)]]
    table: list[dict[str, Any]] = [{"trigger": Trigger.START, "source": State.PENDING, "dest": states[0]}]
    for here, there in zip(states, [*states[1:], State.SUCCEEDED], strict=True):
        table.append({"trigger": Trigger.STEP_SUCCEEDED, "source": here, "dest": there})
        table.append({"trigger": Trigger.STEP_SKIPPED, "source": here, "dest": there})
    in_flight = [*states, State.COMPENSATING]
    table += [
        # Internal transitions: the run stays where it is and the same step is checked again.
        {"trigger": Trigger.STEP_WAITING, "source": in_flight, "dest": None},
        {"trigger": Trigger.STEP_RETRYING, "source": in_flight, "dest": None},
        {"trigger": Trigger.STEP_FAILED, "source": states, "dest": State.COMPENSATING},
        {
            "trigger": Trigger.UNDO_FINISHED,
            "source": State.COMPENSATING,
            "dest": State.COMPENSATING,
            "conditions": "has_more_undo",
        },
        {"trigger": Trigger.UNDO_FINISHED, "source": State.COMPENSATING, "dest": State.FAILED},
    ]
    return table


def machine_states(mode: FailoverMode | PlanKind) -> list[State]:
    steps = [state_of(step) for step, _stage, _side in SEQUENCES[PlanKind.of(mode)]]
    return [State.PENDING, *steps, State.COMPENSATING, State.SUCCEEDED, State.FAILED]


class _ModeMachine:
    """One shared machine per mode with one cursor, positioned and fired under a lock."""

    def __init__(self, mode: PlanKind) -> None:
        self.mode = mode
        self._lock = threading.Lock()
        # One cursor lives on the machine for good: attaching a model per call costs ~0.3 ms.
        self._cursor = _Cursor(state=State.PENDING)
        self._machine = Machine(
            model=self._cursor,
            states=machine_states(mode),
            transitions=transition_table(mode),
            initial=State.PENDING,
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )

    def fire(self, state: State, trigger: str, *, more_undo: bool = False) -> State:
        """The state ``trigger`` leads to from ``state``; raises InvalidTransition if none."""
        cursor = self._cursor
        with self._lock:
            self._machine.set_state(state, model=cursor)
            cursor.more_undo = more_undo
            try:
                cursor.trigger(trigger)  # type: ignore[attr-defined]
            except (MachineError, AttributeError) as error:
                raise InvalidTransition(self.mode, state, trigger) from error
            return cursor.state


class InvalidTransition(RuntimeError):
    """An event that the mode's machine does not allow from the run's state (a bug, not a fault)."""

    def __init__(self, mode: PlanKind, state: State, trigger: str) -> None:
        super().__init__(f"{mode.value} machine: no transition {trigger!r} from {state.name}")
        self.mode, self.state, self.trigger = mode, state, trigger


def machine_for(mode: FailoverMode | PlanKind) -> _ModeMachine:
    return _machine(PlanKind.of(mode))


@cache
def _machine(kind: PlanKind) -> _ModeMachine:
    return _ModeMachine(kind)


def reachable_states(mode: FailoverMode | PlanKind) -> Sequence[State]:
    """Every state of the mode's machine (used by tests and the graph command)."""
    return machine_states(mode)
