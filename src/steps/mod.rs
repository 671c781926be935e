//! Step kinds: each turns typed parameters and upstream outputs into outputs for the store.

pub mod fetch;
