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

/// Internal protocols between the platform's own processes.
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("aerogrid.runtime.v1");
    }
}
