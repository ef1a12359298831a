//! Real processes killed with real signals: `aerogrid dev` itself, the runtime node and its
//! connectors (recovery, random SIGKILLs, faults of PostgreSQL and the broker), the sandbox's
//! layers, and hostile apps and clients. One test binary (one link) for all of them; at most one
//! stack per core runs at once (`support::slots`).

#[path = "../support/mod.rs"]
mod support;

mod connector;
mod dev_stack;
mod faults;
mod hostile;
mod runtime;
mod sandbox;
