"""The graph's server-side sample: at most the node budget, the asked-for entity kept, the cut said."""

from __future__ import annotations

from dust.ui.components import graph
from dust.ui.components.graph import GEdge, GNode


def _star(leaves: int) -> tuple[list[GNode], list[GEdge]]:
    nodes = [GNode("hub", "Hub", "practitioner")] + [GNode(f"p{n}", f"P{n}", "patient") for n in range(leaves)]
    edges = [GEdge(f"e{n}", "hub", f"p{n}", "treats", 1.0 + n % 3) for n in range(leaves)]
    return nodes, edges


def test_a_small_graph_is_drawn_whole() -> None:
    nodes, edges = _star(10)
    sampled = graph.sample(nodes, edges, budget=100)
    assert len(sampled.nodes) == 11 and len(sampled.edges) == 10 and not sampled.cut and not sampled.notes


def test_past_the_budget_the_best_connected_and_the_kept_stay_and_the_page_is_told() -> None:
    nodes, edges = _star(5_000)
    nodes.append(GNode("lonely", "Lonely", "patient"))
    sampled = graph.sample(nodes, edges, budget=1_500, keep=["lonely"])
    ids = {n.id for n in sampled.nodes}
    assert len(ids) == 1_500 and {"hub", "lonely"} <= ids
    assert all(e.source in ids and e.target in ids for e in sampled.edges)
    assert sampled.cut and "Showing 1,500 of 5,002 entities" in sampled.notes[0]


def test_elements_colour_kinds_and_ring_anomalies() -> None:
    nodes, edges = _star(2)
    drawn = graph.elements(graph.sample(nodes, edges), anomalous={"p1"}, centre="hub")
    by_id = {e["data"]["id"]: e for e in drawn}
    assert "anomalous" in by_id["p1"]["classes"] and "centre" in by_id["hub"]["classes"]
    assert by_id["e1"]["data"]["width"] > by_id["e0"]["data"]["width"]  # heavier relation, wider line
    style = graph.stylesheet({"patient", "practitioner"}, {"treats"})
    assert {"selector": ".kind-patient", "style": {"background-color": "#0072B2"}} in style
