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


def dot(mode: FailoverMode | PlanKind) -> str:
    """The same machine in Graphviz DOT, for a PNG (``failoverctl graph --format png``). Pure."""
    edges: dict[tuple[str, str], list[str]] = {}
    for transition in transition_table(mode):
        sources = transition["source"] if isinstance(transition["source"], list) else [transition["source"]]
        for source in sources:
            dest = transition["dest"] or source  # internal transitions stay where they are
            label = transition["trigger"] + (
                f" [{transition['conditions']}]" if "conditions" in transition else ""
            )
            edges.setdefault((source.name, dest.name), []).append(label)
    lines = [
        f'digraph "failover {PlanKind.of(mode).value}" {{',
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=9];',
        "  SUCCEEDED [fillcolor=palegreen]; FAILED [fillcolor=lightpink]; COMPENSATING [fillcolor=khaki];",
    ]
    for (source, dest), labels in edges.items():
        lines.append(f'  {source} -> {dest} [label="{" | ".join(labels)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
