//! Writes tcpstate's man pages and shell completions (generated from its
//! command-line definitions) for packaging: `tcpstate-docs OUT_DIR` creates
//! `OUT_DIR/man/man1/*.1` and `OUT_DIR/completions/{tcpstate.bash,_tcpstate,tcpstate.fish}`.
use std::path::PathBuf;

use anyhow::Context;

fn main() {
    if let Err(e) = run() {
        eprintln!("tcpstate-docs: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let out = match (args.next(), args.next()) {
        (Some(out), None) => PathBuf::from(out),
        _ => anyhow::bail!("usage: tcpstate-docs OUT_DIR (one directory to write into)"),
    };
    let pages = tcpstate::docs::write_man_pages(&out.join("man/man1")).context("man pages")?;
    let completions =
        tcpstate::docs::write_completions(&out.join("completions")).context("completions")?;
    for path in pages.iter().chain(&completions) {
        println!("{}", path.display());
    }
    Ok(())
}
