//! The graph for people and tools: Graphviz DOT, Mermaid, and JSON.
//! Output order is the graph's insertion (topological) order, so it is deterministic.

use serde::Serialize;

use crate::graph::{Graph, NodeId};

#[derive(Serialize)]
pub struct JsonGraph {
    pub schema: &'static str,
    pub nodes: Vec<JsonNode>,
    pub edges: Vec<JsonEdge>,
}

#[derive(Serialize)]
pub struct JsonNode {
    pub id: usize,
    pub name: String,
    pub kind: String,
    pub aliases: Vec<String>,
    pub identity: String,
}

#[derive(Serialize)]
pub struct JsonEdge {
    pub from: usize,
    pub to: usize,
    /// The input position at the consumer.
    pub input: usize,
}

fn ordered(graph: &Graph, roots: &[NodeId]) -> Vec<NodeId> {
    graph.closure(roots)
}

pub fn json(graph: &Graph, roots: &[NodeId]) -> JsonGraph {
    let nodes = ordered(graph, roots);
    let pos = |id: NodeId| nodes.iter().position(|n| *n == id).unwrap_or(usize::MAX);
    JsonGraph {
        schema: "w4b.graph/1",
        nodes: nodes
            .iter()
            .map(|&id| {
                let n = graph.node(id);
                JsonNode {
                    id: pos(id),
                    name: n.name.clone(),
                    kind: n.step.kind().to_string(),
                    aliases: n.aliases.clone(),
                    identity: n.identity.to_hex(),
                }
            })
            .collect(),
        edges: nodes
            .iter()
            .flat_map(|&id| {
                graph
                    .node(id)
                    .deps
                    .iter()
                    .enumerate()
                    .map(move |(i, d)| JsonEdge {
                        from: pos(*d),
                        to: pos(id),
                        input: i,
                    })
            })
            .collect(),
    }
}

fn quote(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub fn dot(graph: &Graph, roots: &[NodeId]) -> String {
    let nodes = ordered(graph, roots);
    let mut s = String::from("digraph w4b {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n");
    for (i, &id) in nodes.iter().enumerate() {
        let n = graph.node(id);
        s.push_str(&format!(
            "  n{i} [label={}];\n",
            quote(&format!("{}\n({})", n.name, n.step.kind()))
        ));
    }
    for (i, &id) in nodes.iter().enumerate() {
        for d in &graph.node(id).deps {
            if let Some(j) = nodes.iter().position(|n| n == d) {
                s.push_str(&format!("  n{j} -> n{i};\n"));
            }
        }
    }
    s.push_str("}\n");
    s
}

pub fn mermaid(graph: &Graph, roots: &[NodeId]) -> String {
    let nodes = ordered(graph, roots);
    let mut s = String::from("flowchart LR\n");
    for (i, &id) in nodes.iter().enumerate() {
        let n = graph.node(id);
        let label = format!("{} ({})", n.name, n.step.kind()).replace('"', "#quot;");
        s.push_str(&format!("  n{i}[\"{label}\"]\n"));
    }
    for (i, &id) in nodes.iter().enumerate() {
        for d in &graph.node(id).deps {
            if let Some(j) = nodes.iter().position(|n| n == d) {
                s.push_str(&format!("  n{j} --> n{i}\n"));
            }
        }
    }
    s
}
