//! Compiles the gRPC protocol with a vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let include = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure().compile_protos(
        &["proto/buildr/rpc/v1/executor.proto"],
        &[
            "proto",
            include.to_str().ok_or("protoc include path is not UTF-8")?,
        ],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
