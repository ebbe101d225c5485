//! Man pages and shell completions, generated from the command-line
//! definitions in [`crate::cli`] so they never drift from `--help`.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

use clap::CommandFactory;
use clap_complete::Shell;

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The complete clap command of `tcpstate`.
pub fn command() -> clap::Command {
    crate::cli::Cli::command()
}

/// Writes `tcpstate.1` and one `tcpstate-SUBCOMMAND.1` per subcommand into
/// `dir` (created if missing); returns the files written, sorted.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let write_err = |source| DocsError::Write {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(write_err)?;
    clap_mangen::generate_to(command(), dir).map_err(write_err)?;
    list(dir, |name| name.ends_with(".1"))
}

/// Writes the completion scripts into `dir` (created if missing): bash
/// `tcpstate.bash`, zsh `_tcpstate`, fish `tcpstate.fish`; returns them.
pub fn write_completions(dir: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let write_err = |source| DocsError::Write {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(write_err)?;
    let mut written = Vec::new();
    for shell in SHELLS {
        let mut cmd = command();
        let path =
            clap_complete::generate_to(shell, &mut cmd, "tcpstate", dir).map_err(write_err)?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, DocsError> {
    let read_err = |source| DocsError::Write {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(&keep) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcpstate-docs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn one_man_page_per_subcommand_and_the_main_one() {
        let dir = scratch("man");
        let pages = write_man_pages(&dir).expect("man pages written");
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut expected = vec!["tcpstate.1".to_string()];
        for sub in command().get_subcommands() {
            expected.push(format!("tcpstate-{}.1", sub.get_name()));
        }
        for name in &expected {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        let serve = fs::read_to_string(dir.join("tcpstate-serve.1")).expect("serve page");
        assert!(serve.starts_with(".ie") || serve.contains(".TH"), "{serve}");
        assert!(serve.contains("metrics"), "the --metrics option: {serve}");
        let main = fs::read_to_string(dir.join("tcpstate.1")).expect("main page");
        for sub in ["trace", "leaks", "serve", "doctor"] {
            assert!(main.contains(sub), "{sub} in tcpstate(1)");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn completions_for_bash_zsh_and_fish_know_the_subcommands() {
        let dir = scratch("completions");
        let files = write_completions(&dir).expect("completions written");
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["_tcpstate", "tcpstate.bash", "tcpstate.fish"]);
        for file in &files {
            let text = fs::read_to_string(file).unwrap();
            for word in ["serve", "leaks", "top-processes"] {
                assert!(text.contains(word), "{word} in {}", file.display());
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let file = scratch("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = write_man_pages(&file.join("man1")).unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
        fs::remove_file(&file).unwrap();
    }
}
