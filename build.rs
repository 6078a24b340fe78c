//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no system `protoc`) and
//! generates the tonic clients and servers into `OUT_DIR` (the servers apart, in `servers/`,
//! with the request codec of `src/codec.rs`), plus the encoded file descriptor set that the
//! server's reflection service serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(proto_dir.join("ocx/v1"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(&files, [&proto_dir])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ocx_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Messages (each naming itself: `prost::Name`) and clients, with tonic's codec.
    let mut messages = tonic_prost_build::Config::new();
    messages.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds_with_config(fds.clone(), messages)?;
    // Servers, apart, over the same messages: they decode requests with `codec::RequestCodec`
    // (a request that is not a valid message is INVALID_ARGUMENT, not tonic's INTERNAL).
    let servers = out_dir.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".ocx.v1", "crate::pb")
        .codec_path("crate::codec::RequestCodec")
        .out_dir(&servers)
        .compile_fds(fds)?;
    Ok(())
}
