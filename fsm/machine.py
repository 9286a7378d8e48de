"""The transition table of each kind of run: built as a ``transitions`` machine, compiled to a lookup.

The card's state machine is the source of truth: :func:`build_machine` declares it with the
``transitions`` library (``auto_transitions=False``, so that no ``to_X`` shortcut can jump past the
plan; no callbacks, so nothing can half-apply), and ``failoverctl graph`` draws that very machine.
:data:`TABLE` is compiled *from* it once, at import, into a plain ``(state, event) -> state`` dict,
which is all :func:`fsm.decide.decide` needs per event (a dict lookup instead of positioning a
shared model under a lock). A test proves the two agree on every state and event.

The events are :class:`EventKind`: what a step reported (succeeded, skipped, waiting, failed for
now, failed for good), the start, a redrive and the end of compensation. One name per idea: what a
worker reports is exactly what the machine is fired with.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from transitions import Machine

from fsm.plan import SEQUENCES, Phase, PlanKind, State, state_name


class EventKind(StrEnum):
    """Something that happened to a run, and the trigger it fires on the run's machine."""

    START = "start"
    SUCCEEDED = "step_succeeded"
    SKIPPED = "step_skipped"
    WAITING = "step_waiting"
    TEMPORARY_FAILURE = "step_failed_temporarily"
    PERMANENT_FAILURE = "step_failed"
    REDRIVE = "redrive"
    UNDO_FINISHED = "undo_finished"


# What ends a step: the run moves to the next step (or, in compensation, to the next undo action).
_STEP_ENDS = (EventKind.SUCCEEDED, EventKind.SKIPPED)
# The run stays where it is and the same step is sent again (later, or now for a redrive).
_STAYS = (EventKind.WAITING, EventKind.TEMPORARY_FAILURE, EventKind.REDRIVE)


def machine_states(kind: PlanKind) -> list[State]:
    steps: list[State] = [step for step, _stage, _side in SEQUENCES[kind]]
    return [Phase.PENDING, *steps, Phase.COMPENSATING, Phase.SUCCEEDED, Phase.FAILED]


def transition_table(kind: PlanKind) -> list[dict[str, Any]]:
    """The machine's transitions as ``transitions`` declares them, states named by their labels."""
    steps = [state_name(step) for step, _stage, _side in SEQUENCES[kind]]
    compensating, succeeded, failed = (
        state_name(p) for p in (Phase.COMPENSATING, Phase.SUCCEEDED, Phase.FAILED)
    )
    table: list[dict[str, Any]] = [
        {"trigger": EventKind.START.value, "source": state_name(Phase.PENDING), "dest": steps[0]}
    ]
    for here, there in zip(steps, [*steps[1:], succeeded], strict=True):
        table += [{"trigger": event.value, "source": here, "dest": there} for event in _STEP_ENDS]
    in_flight = [*steps, compensating]
    # Internal transitions (dest None): the run stays where it is and the same step is checked again.
    table += [{"trigger": event.value, "source": in_flight, "dest": None} for event in _STAYS]
    table.append({"trigger": EventKind.PERMANENT_FAILURE.value, "source": steps, "dest": compensating})
    # In compensation every undo action ends, done or not, and the next one runs; then the run fails.
    table += [
        {"trigger": event.value, "source": compensating, "dest": compensating}
        for event in (*_STEP_ENDS, EventKind.PERMANENT_FAILURE)
    ]
    table.append({"trigger": EventKind.UNDO_FINISHED.value, "source": compensating, "dest": failed})
    return table


class _Model:
    """The object a machine moves; only ``transitions`` touches it."""


def build_machine(kind: PlanKind, model: object | None = None, **options: Any) -> Machine:
    """The ``transitions`` machine of ``kind`` (``options`` go to the Machine, e.g. a graph engine)."""
    machine_class: type[Machine] = options.pop("machine_class", Machine)
    return machine_class(
        model=model if model is not None else _Model(),
        states=[state_name(s) for s in machine_states(kind)],
        transitions=transition_table(kind),
        initial=state_name(Phase.PENDING),
        auto_transitions=False,
        ignore_invalid_triggers=False,
        **options,
    )


def _compile(kind: PlanKind) -> dict[tuple[State, EventKind], State]:
    """``(state, event) -> next state`` read off the built machine (internal transitions stay put)."""
    machine = build_machine(kind)
    by_name = {state_name(s): s for s in machine_states(kind)}
    table: dict[tuple[State, EventKind], State] = {}
    for trigger, event in machine.events.items():
        for source, transitions in event.transitions.items():
            for transition in transitions:
                dest = transition.dest if transition.dest is not None else source
                table[(by_name[source], EventKind(trigger))] = by_name[dest]
    return table


TABLE: dict[PlanKind, dict[tuple[State, EventKind], State]] = {kind: _compile(kind) for kind in PlanKind}


class InvalidTransition(RuntimeError):
    """An event that the kind's machine does not allow from the run's state (a bug, not a fault)."""

    def __init__(self, kind: PlanKind, state: State, event: EventKind) -> None:
        super().__init__(f"{kind.value} machine: no transition {event.value!r} from {state_name(state)}")
        self.kind, self.state, self.event = kind, state, event


def fire(kind: PlanKind, state: State, event: EventKind) -> State:
    """The state ``event`` leads to from ``state`` in a ``kind`` run; InvalidTransition if none."""
    try:
        return TABLE[kind][(state, event)]
    except KeyError:
        raise InvalidTransition(kind, state, event) from None
