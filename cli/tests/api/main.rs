//! The platform's surfaces against a real `aerogrid dev`: the REST API (who may do what, its
//! rules, its OpenAPI document fuzzed), tenant isolation over REST and gRPC, the grid gateway
//! and the Excel add-in as served. One test binary (one link) for all of them; at most one stack
//! per core runs at once (`support::slots`).

#[path = "../support/mod.rs"]
mod support;

mod api_fuzz;
mod authorization;
mod control_plane;
mod excel;
mod gateway;
mod gateway_servers;
mod grpc_tenancy;
mod packages;
mod schemas;
mod tenancy;
