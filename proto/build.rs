//! Compiles the .proto contract with tonic; protoc comes from the vendored crate
//! so a fresh machine needs no system protobuf compiler.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("pgsnapman_descriptor.bin"))
        // Debug is written by hand for messages that carry secrets.
        .skip_debug([
            "pgsnapman.v1.InstanceConnection",
            "pgsnapman.v1.AddInstanceRequest",
            "pgsnapman.v1.UpdateInstanceRequest",
            "pgsnapman.v1.CreateTokenResponse",
            "pgsnapman.v1.EnrollmentToken",
            "pgsnapman.v1.EnrollRequest",
        ])
        .compile_with_config(config, &["pgsnapman/v1/pgsnapman.proto"], &["."])?;
    println!("cargo:rerun-if-changed=pgsnapman/v1/pgsnapman.proto");
    Ok(())
}
