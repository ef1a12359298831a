//! Compiles `aerogrid/**/*.proto` with protox (pure Rust: no `protoc` on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "aerogrid/v1/grid.proto",
        "aerogrid/runtime/v1/connector.proto",
        "aerogrid/runtime/v1/relay.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .build_client(true)
        .build_transport(false)
        // Relayed records are passed on as they came, to every gateway that follows the app.
        .bytes(".aerogrid.runtime.v1.RelayedRecord.record")
        .compile_fds(file_descriptors)?;
    // The public API alone, for server reflection: the runtime's pipe protocol stays internal.
    let public = protox::compile(["aerogrid/v1/grid.proto"], ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is unset")?);
    std::fs::write(
        out_dir.join("aerogrid_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&public),
    )?;
    if std::env::var_os("CARGO_FEATURE_SERVER").is_some() {
        compile_server_side(&out_dir)?;
    }
    Ok(())
}

/// `server/aerogrid/v1/grid_service.proto`: the grid service as the server implements it, with
/// pre-encoded events. Only that file is generated (into `OUT_DIR/server`); the messages it
/// shares with `grid.proto` are the ones generated above.
fn compile_server_side(out_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    const FILE: &str = "server/aerogrid/v1/grid_service.proto";
    println!("cargo:rerun-if-changed={FILE}");
    let mut descriptors = protox::compile([FILE], ["."])?;
    descriptors.file.retain(|file| file.name() == FILE);
    let server_out = out_dir.join("server");
    std::fs::create_dir_all(&server_out)?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .build_transport(false)
        .out_dir(&server_out)
        .bytes(".aerogrid.v1.EncodedSubscribeResponse")
        .extern_path(".aerogrid.v1.SubscribeRequest", "crate::v1::SubscribeRequest")
        .extern_path(".aerogrid.v1.ListGridsRequest", "crate::v1::ListGridsRequest")
        .extern_path(".aerogrid.v1.ListGridsResponse", "crate::v1::ListGridsResponse")
        .compile_fds(descriptors)?;
    Ok(())
}
