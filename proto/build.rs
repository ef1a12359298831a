//! Compiles `aerogrid/**/*.proto` with protox (pure Rust: no `protoc` on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["aerogrid/v1/grid.proto", "aerogrid/runtime/v1/connector.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(true)
        .build_transport(false)
        .compile_fds(file_descriptors)?;
    // The public API alone, for server reflection: the runtime's pipe protocol stays internal.
    let public = protox::compile(["aerogrid/v1/grid.proto"], ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is unset")?);
    std::fs::write(
        out_dir.join("aerogrid_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&public),
    )?;
    Ok(())
}
