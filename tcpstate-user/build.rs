//! Embeds the BPF object built by `cargo xtask build` into the binary.
//!
//! `TCPSTATE_BPF_OBJECT` names the object. Without it (a plain `cargo build`,
//! or clippy), the default output path of the xtask build is used if present;
//! otherwise an empty object is embedded and `tcpstate` refuses to start with
//! a message saying how to build it properly.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=TCPSTATE_BPF_OBJECT");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../target/bpf/bpfel-unknown-none/release/tcpstate");
    let object = env::var_os("TCPSTATE_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", object.display());

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("tcpstate.bpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=no BPF object at {}; build with `cargo xtask build`",
                object.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
