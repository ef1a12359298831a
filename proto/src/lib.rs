//! The wire contract between the backend and every client (browser, Excel add-in, CLI).
//!
//! Generated from `proto/aerogrid/**/*.proto`. This crate must build for `wasm32-unknown-unknown`,
//! so it depends on nothing but prost and tonic's codegen.

pub mod v1 {
    tonic::include_proto!("aerogrid.v1");

    /// `aerogrid/v1/grid.proto` as an encoded `FileDescriptorSet`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/aerogrid_v1_descriptor.bin"));
}

pub mod model;

/// The grid service as the backend implements it: `Subscribe` sends events encoded once and
/// shared by every subscriber (`server/aerogrid/v1/grid_service.proto`), the same bytes on the
/// wire as `v1`.
#[cfg(feature = "server")]
pub mod server {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/server/aerogrid.v1.rs"));
    }
}

/// Internal protocols between the platform's own processes.
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("aerogrid.runtime.v1");
    }

    pub mod pipe;

    /// The metadata in which a gateway's `ChangelogRelay.Follow` carries the node's token.
    pub const RELAY_TOKEN_HEADER: &str = "x-aerogrid-relay-token";
}
