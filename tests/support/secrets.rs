//! Every secret a test hands to the gateway or gets from it (passwords, tokens, claim codes,
//! private keys), so that the test can check at its end that none of them was ever written to
//! the daemon's log, or stored in clear in its data directory.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::Daemon;

#[derive(Default)]
pub struct Secrets {
    /// (what it is, the secret, files of the data directory that legitimately hold it).
    items: Vec<(String, String, Vec<PathBuf>)>,
}

impl Secrets {
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// A secret that must appear nowhere: not in the log, not in any file of the data directory.
    pub fn add(&mut self, what: impl Into<String>, secret: &str) {
        self.add_kept_in(what, secret, &[]);
    }

    /// A secret that the gateway keeps, by design, in the given files of its data directory
    /// (relative paths, e.g. `api-token`); it must appear in no other file and not in the log.
    pub fn add_kept_in(&mut self, what: impl Into<String>, secret: &str, files: &[&str]) {
        let what = what.into();
        assert!(secret.len() >= 8, "{what}: `{secret}` is too short to search for reliably");
        self.items.push((what, secret.to_string(), files.iter().map(PathBuf::from).collect()));
    }

    /// HTTP Basic credentials: both the password and the `user:password` base64 form a header
    /// carries.
    pub fn add_basic(&mut self, what: &str, user: &str, password: &str) {
        self.add(what, password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.add(format!("{what} (Basic header)"), &encoded);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Panics, naming each secret and where it was found, if any secret is in the daemon's log.
    pub fn assert_not_logged(&self, daemon: &Daemon) {
        let log = daemon.log();
        assert!(!log.is_empty(), "the daemon's log is empty: nothing was checked");
        let found: Vec<String> = self
            .items
            .iter()
            .filter(|(_, secret, _)| log.contains(secret.as_str()))
            .map(|(what, _, _)| what.clone())
            .collect();
        assert!(found.is_empty(), "secrets in the log ({}): {found:?}", daemon.log_path.display());
    }

    /// Panics if a secret is stored in clear in a file of the data directory other than the ones
    /// it was declared to be kept in (the SQLite database, its WAL and every other file are read
    /// as bytes).
    pub fn assert_not_stored(&self, daemon: &Daemon) {
        let mut found = Vec::new();
        for file in files_under(&daemon.data_dir) {
            let relative = file.strip_prefix(&daemon.data_dir).unwrap_or(&file).to_path_buf();
            if file == daemon.log_path {
                continue;
            }
            let Ok(bytes) = std::fs::read(&file) else { continue };
            for (what, secret, kept_in) in &self.items {
                if kept_in.contains(&relative) {
                    continue;
                }
                if contains(&bytes, secret.as_bytes()) {
                    found.push(format!("{what} in {}", relative.display()));
                }
            }
        }
        assert!(found.is_empty(), "secrets stored in clear: {found:?}");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}
