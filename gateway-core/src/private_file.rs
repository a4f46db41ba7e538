//! Files that hold secrets (keys, the API token, password hashes): created 0600 from their
//! first byte in 0700 directories, and tightened again at every start, because a restore, a
//! copy or a person's `chmod` may have loosened them since.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` readable by the owner only, replacing what was there.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)?;
    // `mode` applies only to a new file: an existing one keeps its bits unless set again.
    set_mode(path, 0o600)
}

/// Creates `dir` if needed, open to its owner only.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    set_mode(dir, 0o700)
}

/// Where the data directory keeps secrets: (directories 0700 with every file in them 0600,
/// single files 0600).
const PRIVATE_DIRS: &[&str] = &["tls", "secrets"];
const PRIVATE_FILES: &[&str] = &["api-token", "admin-password", "setup-code"];
/// Public files inside the private directories (certificates).
fn is_public(name: &str) -> bool {
    name.ends_with(".crt") || name.ends_with(".pem") || name.ends_with(".json")
}

/// Tightens every secret of the data directory that has been loosened; returns the paths it
/// changed, with their former mode, for the log.
pub fn tighten_data_dir(data_dir: &Path) -> std::io::Result<Vec<(String, u32)>> {
    let mut changed = Vec::new();
    for dir in PRIVATE_DIRS {
        let dir = data_dir.join(dir);
        if !dir.is_dir() {
            continue;
        }
        tighten(&dir, 0o700, &mut changed)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && !is_public(&name) {
                tighten(&entry.path(), 0o600, &mut changed)?;
            }
        }
    }
    for file in PRIVATE_FILES {
        let path = data_dir.join(file);
        if path.is_file() {
            tighten(&path, 0o600, &mut changed)?;
        }
    }
    Ok(changed)
}

#[cfg(unix)]
fn tighten(path: &Path, wanted: u32, changed: &mut Vec<(String, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & !wanted != 0 {
        set_mode(path, wanted)?;
        changed.push((path.display().to_string(), mode));
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: u32, _: &mut Vec<(String, u32)>) -> std::io::Result<()> {
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn loosened_secrets_are_tightened_and_certificates_left_readable() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        ensure_dir(&data.join("tls")).unwrap();
        write(&data.join("tls/ca.key"), b"key").unwrap();
        std::fs::write(data.join("tls/ca.crt"), b"cert").unwrap();
        write(&data.join("api-token"), b"token").unwrap();
        std::fs::write(data.join("gatehouse.db"), b"db").unwrap();
        assert!(tighten_data_dir(data).unwrap().is_empty(), "nothing to do when nothing was loosened");

        let loosen = |path: &str, bits: u32| {
            std::fs::set_permissions(data.join(path), std::fs::Permissions::from_mode(bits)).unwrap()
        };
        loosen("tls", 0o755);
        loosen("tls/ca.key", 0o644);
        loosen("tls/ca.crt", 0o644);
        loosen("api-token", 0o640);
        let changed = tighten_data_dir(data).unwrap();
        assert_eq!(changed.len(), 3, "{changed:?}");
        assert_eq!(mode(&data.join("tls")), 0o700);
        assert_eq!(mode(&data.join("tls/ca.key")), 0o600);
        assert_eq!(mode(&data.join("api-token")), 0o600);
        assert_eq!(mode(&data.join("tls/ca.crt")), 0o644, "certificates are public");
    }

    #[test]
    fn writing_over_a_loose_file_makes_it_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
