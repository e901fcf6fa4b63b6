//! Compiles the ONNX subset we write models with (vendored protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx_subset.proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.compile_protos(&["proto/onnx_subset.proto"], &["proto"])?;
    Ok(())
}
