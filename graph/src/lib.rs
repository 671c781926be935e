//! w4b-graph: the generic build engine.
//!
//! - [`key`]: what a step key is made of, and its pinned encoding.
//! - [`step`]: the [`Step`] trait that application step kinds implement.
//! - [`graph`]: the DAG of steps (petgraph), with sharing of identical nodes.
//! - [`exec`]: planning and parallel execution against a [`Cache`], with early cutoff and
//!   repair of missing or corrupt inputs.
//! - [`history`] and [`explain`]: what `w4b why` needs: per-target build history and the
//!   typed reasons each step re-ran.
//! - [`render`]: the graph as DOT, Mermaid or JSON.
//!
//! Nothing here knows about Raspberry Pis, YAML or terminals.

pub mod cache;
pub mod exec;
pub mod explain;
pub mod graph;
pub mod history;
pub mod key;
pub mod render;
pub mod step;

pub use cache::{Cache, CacheResult, Lookup, MissReason};
pub use exec::{BuildOptions, BuildReport, Engine, Event, Observer, Silent, StepResult, StepStatus};
pub use graph::{Graph, Node, NodeId};
pub use key::{Component, ComponentKind, Preimage};
pub use step::{InputTrees, Outputs, PlanContext, RunContext, Step, StepError};
#[cfg(test)]
mod tests;
