//! Where this host's apt finds Debian's archive and its security archive.
//!
//! The kernel packages of the matrix come from the same mirrors apt already
//! uses (the project names no mirror of its own), read from
//! `/etc/apt/sources.list.d/*.sources` (deb822) and `*.list` files.

use std::fs;
use std::path::Path;

/// Base URIs of the two Debian archives, as apt's sources name them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebianMirrors {
    /// The archive of the releases (suites like `bookworm`).
    pub main: Option<String>,
    /// The security archive (suites like `bookworm-security`).
    pub security: Option<String>,
}

impl DebianMirrors {
    /// Reads every sources file apt reads.
    pub fn of_host() -> Self {
        let mut mirrors = DebianMirrors::default();
        let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
        if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut more: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
            more.sort();
            files.extend(more);
        }
        for file in files {
            let Ok(text) = fs::read_to_string(&file) else {
                continue;
            };
            let name = file.to_string_lossy();
            if name.ends_with(".sources") {
                mirrors.add_deb822(&text);
            } else if name.ends_with(".list") {
                mirrors.add_one_line(&text);
            }
        }
        mirrors
    }

    /// deb822 stanzas: `Types:`, `URIs:`, `Suites:`, separated by blank lines.
    pub fn add_deb822(&mut self, text: &str) {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .find_map(|l| {
                        let (key, value) = l.split_once(':')?;
                        key.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| value.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            if !field("Types").split_whitespace().any(|t| t == "deb") {
                continue;
            }
            let suites = field("Suites");
            for uri in field("URIs").split_whitespace() {
                for suite in suites.split_whitespace() {
                    self.add(uri, suite);
                }
            }
        }
    }

    /// `deb [options] URI SUITE COMPONENTS...` lines.
    pub fn add_one_line(&mut self, text: &str) {
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("deb ") else {
                continue;
            };
            let rest = rest.trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(opts) => opts.split_once(']').map_or("", |(_, r)| r),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                self.add(uri, suite);
            }
        }
    }

    fn add(&mut self, uri: &str, suite: &str) {
        let uri = uri.trim_end_matches('/').to_string();
        // Only Debian's own archives (their pool paths and suites are what
        // the matrix asks for): not Ubuntu's, nor a third party's.
        let debian = uri.ends_with("/debian") || uri.ends_with("/debian-security");
        if !debian {
            return;
        }
        let slot = if suite.ends_with("-security") || uri.ends_with("/debian-security") {
            &mut self.security
        } else {
            &mut self.main
        };
        if slot.is_none() {
            *slot = Some(uri);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_sources_give_both_archives() {
        let mut m = DebianMirrors::default();
        m.add_deb822(
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\n\n# comment\nTypes: deb\nURIs: http://mirror.example/debian-security/\n\
             Suites: bookworm-security\nComponents: main\n\nTypes: deb-src\n\
             URIs: http://other.example/debian\nSuites: bookworm\n",
        );
        assert_eq!(m.main.as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(
            m.security.as_deref(),
            Some("http://mirror.example/debian-security")
        );
    }

    #[test]
    fn one_line_sources_with_options_and_foreign_archives() {
        let mut m = DebianMirrors::default();
        m.add_one_line(
            "# deb http://commented.example/debian bookworm main\n\
             deb http://archive.example/ubuntu jammy main\n\
             deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n\
             deb http://m.example/debian-security bookworm-security main\n",
        );
        assert_eq!(m.main.as_deref(), Some("http://m.example/debian"));
        assert_eq!(
            m.security.as_deref(),
            Some("http://m.example/debian-security")
        );
        let mut none = DebianMirrors::default();
        none.add_one_line("deb http://archive.example/ubuntu jammy main\ngarbage\n");
        none.add_deb822("Types: deb\nURIs:\nSuites:\n\n\n::::\n");
        assert_eq!(none, DebianMirrors::default());
    }
}
