// Generates the Mesos message types from Pacer's hand-written `.proto` subsets. protox parses
// them in Rust, so no `protoc` is needed; pbjson adds serde impls for Mesos's JSON flavour.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/mesos.proto", "proto/scheduler.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("descriptors.bin"), &descriptors)?;
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .build(&[".mesos"])?;
    Ok(())
}
