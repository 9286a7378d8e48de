"""The state machine of a kind of run as a Mermaid ``stateDiagram-v2``, drawn by transitions itself.

Pure: returns text. Built from the same table as the machine that ``decide`` fires, so the picture
cannot drift from the behaviour.
"""

from __future__ import annotations

from transitions.extensions.diagrams import GraphMachine

from fsm.machine import build_machine, transition_table
from fsm.plan import PlanKind


class _Model:
    """transitions draws the graph of a model; this one only carries the state."""


def mermaid(kind: PlanKind) -> str:
    """The machine ``decide`` follows (its table is compiled from this very machine), as Mermaid."""
    model = _Model()
    build_machine(
        kind, model, machine_class=GraphMachine, graph_engine="mermaid", title=f"failover {kind.value}"
    )
    return str(model.get_graph().draw(None))  # type: ignore[attr-defined]


def dot(kind: PlanKind) -> str:
    """The same machine in Graphviz DOT, for a PNG (``failoverctl graph --format png``). Pure."""
    edges: dict[tuple[str, str], list[str]] = {}
    for transition in transition_table(kind):
        sources = transition["source"] if isinstance(transition["source"], list) else [transition["source"]]
        for source in sources:
            dest = transition["dest"] or source  # internal transitions stay where they are
            edges.setdefault((source, dest), []).append(transition["trigger"])
    lines = [
        f'digraph "failover {kind.value}" {{',
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=9];',
        "  SUCCEEDED [fillcolor=palegreen]; FAILED [fillcolor=lightpink]; COMPENSATING [fillcolor=khaki];",
    ]
    for (source, dest), labels in edges.items():
        lines.append(f'  {source} -> {dest} [label="{" | ".join(labels)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
