"""The state machine of a mode as a Mermaid ``stateDiagram-v2``, drawn by transitions itself.

Pure: returns text. Built from the same table as the machine that ``decide`` fires, so the picture
cannot drift from the behaviour.
"""

from __future__ import annotations

from transitions.extensions.diagrams import GraphMachine

from fsm.machine import machine_states, transition_table
from fsm.models import FailoverMode
from fsm.plan import PlanKind


class _Model:
    """transitions draws the graph of a model; this one only carries the state."""


def mermaid(mode: FailoverMode | PlanKind) -> str:
    model = _Model()
    GraphMachine(
        model=model,
        states=machine_states(mode),
        transitions=transition_table(mode),
        initial=machine_states(mode)[0],
        auto_transitions=False,
        graph_engine="mermaid",
        show_conditions=True,
        title=f"failover {mode.value}",
    )
    return str(model.get_graph().draw(None))  # type: ignore[attr-defined]
