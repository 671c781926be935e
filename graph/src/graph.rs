//! The build graph: steps as nodes of a petgraph DAG, edges from inputs to consumers.
//!
//! Nodes are added in dependency order (a node's inputs must exist first), so the graph is
//! acyclic by construction. A node is identified by an *identity* digest the compiler
//! computes from the step's definition and its inputs' identities: adding a node whose
//! identity already exists returns the existing node, which is how two images that use
//! the same layer share one step.

use std::collections::BTreeMap;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, EdgeRef, Reversed};
use petgraph::Direction;
use w4b_cache::Digest;

use crate::step::Step;

pub type NodeId = NodeIndex<u32>;

pub struct Node {
    /// Stable name, e.g. `//images:demo#motd`.
    pub name: String,
    /// Other names this shared node is known by, sorted.
    pub aliases: Vec<String>,
    pub step: Arc<dyn Step>,
    pub identity: Digest,
    /// Inputs in the order the step expects them.
    pub deps: Vec<NodeId>,
}

#[derive(Default)]
pub struct Graph {
    g: DiGraph<Node, usize, u32>,
    by_identity: BTreeMap<Digest, NodeId>,
    by_name: BTreeMap<String, NodeId>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a step (or returns the existing node with the same identity, recording `name`
    /// as an alias).
    pub fn add(
        &mut self,
        name: impl Into<String>,
        identity: Digest,
        step: Arc<dyn Step>,
        deps: Vec<NodeId>,
    ) -> NodeId {
        let name = name.into();
        if let Some(&id) = self.by_identity.get(&identity) {
            let node = &mut self.g[id];
            if node.name != name && !node.aliases.contains(&name) {
                // Keep the smallest name canonical so the result does not depend on the
                // order targets were compiled in.
                if name < node.name {
                    let old = std::mem::replace(&mut node.name, name.clone());
                    node.aliases.push(old);
                } else {
                    node.aliases.push(name.clone());
                }
                node.aliases.sort();
                self.by_name.insert(name, id);
            }
            return id;
        }
        let id = self.g.add_node(Node {
            name: name.clone(),
            aliases: Vec::new(),
            step,
            identity,
            deps: deps.clone(),
        });
        for (pos, d) in deps.iter().enumerate() {
            self.g.add_edge(*d, id, pos);
        }
        self.by_identity.insert(identity, id);
        self.by_name.insert(name, id);
        id
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// Every node, in insertion order (a topological order).
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    /// Consumers of `id`.
    pub fn dependents(&self, id: NodeId) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| e.target())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// `roots` and everything they depend on, in topological (insertion) order.
    pub fn closure(&self, roots: &[NodeId]) -> Vec<NodeId> {
        let rev = Reversed(&self.g);
        let mut seen = vec![false; self.g.node_count()];
        for &r in roots {
            let mut dfs = Dfs::new(rev, r);
            while let Some(n) = dfs.next(rev) {
                seen[n.index()] = true;
            }
        }
        self.g.node_indices().filter(|n| seen[n.index()]).collect()
    }

    /// Whether `id`'s results may go to the remote cache: its step says so and so does
    /// every step upstream of it. Anything derived from a secret is not shareable, and
    /// neither is anything derived from that (DESIGN §8).
    pub fn shareable(&self, id: NodeId) -> bool {
        let rev = Reversed(&self.g);
        let mut dfs = Dfs::new(rev, id);
        while let Some(n) = dfs.next(rev) {
            if !self.g[n].step.shareable() {
                return false;
            }
        }
        true
    }

    pub fn petgraph(&self) -> &DiGraph<Node, usize, u32> {
        &self.g
    }
}

/// A digest over the parts that identify a node before planning: its kind, whatever the
/// compiler considers its definition, and its inputs' identities.
pub fn identity(kind: &str, definition: &[u8], deps: &[&Node]) -> Digest {
    let mut h = blake3::Hasher::new_derive_key("w4b 2026-11-26 node identity v1");
    h.update(&(kind.len() as u64).to_le_bytes());
    h.update(kind.as_bytes());
    h.update(&(definition.len() as u64).to_le_bytes());
    h.update(definition);
    for d in deps {
        h.update(d.identity.as_bytes());
    }
    Digest::from(h.finalize())
}
