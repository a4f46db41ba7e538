//! The headless daemon's Debian package (`scripts/package-daemon.sh`, `packaging/daemon/`), built
//! from target/debug/gatehouse: its control fields and contents, the systemd unit checked by
//! `systemd-analyze verify` and `security`, the shipped config file accepted by the daemon; then,
//! as root only, `dpkg -i`, the daemon run as the `gatehouse` user, remove and purge.
//!
//! Outside CI a missing tool, root, or a machine where installing is not safe skips with the
//! reason; in CI (`CI` set) each of these fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use gatehouse_tests::{require_tool, workspace_bin, Daemon};
use serde_json::Value;

const CONFFILE: &str = "/etc/gatehouse/gatehouse.toml";
const UNIT: &str = "lib/systemd/system/gatehouse.service";
/// `systemd-analyze security` rates the unit 1.2 today; more means hardening was lost.
const MAX_EXPOSURE: f64 = 2.0;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Skips outside CI with the reason; fails in CI.
fn skip(reason: &str) {
    assert!(std::env::var_os("CI").is_none(), "{reason}");
    eprintln!("SKIPPED: {reason}");
}

fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).expect("UTF-8 output")
}

/// Builds the package with the script into `out` and returns its path.
fn build_package(out: &Path) -> Option<PathBuf> {
    for tool in ["dpkg-deb", "readelf", "bash"] {
        require_tool(tool)?;
    }
    if !workspace().join("ui/dist/index.html").is_file() {
        skip("the web UI is not built (ui/dist); `cd ui && npm ci && npm run build` or scripts/setup.sh builds it");
        return None;
    }
    let output = stdout(
        Command::new("bash")
            .arg(workspace().join("scripts/package-daemon.sh"))
            .arg("--binary")
            .arg(workspace_bin("gatehouse"))
            .arg("--out")
            .arg(out)
            // The debug binary is large: no compression keeps this test fast.
            .args(["--compression", "none"]),
    );
    println!("{output}");
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .expect("read the output directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package in {}: {debs:?}", out.display());
    assert!(output.contains(&debs[0].display().to_string()), "the script prints the package's path");
    Some(debs[0].clone())
}

/// `GET path` over plain HTTP/1.1; the status and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the HTTP API");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

fn control_field(info: &str, name: &str) -> String {
    let prefix = format!(" {name}: ");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in dpkg-deb -I:\n{info}"))
        .to_string()
}

#[test]
fn the_package_holds_the_daemon_ui_unit_and_config_and_its_unit_verifies() {
    let temp = tempfile::tempdir().unwrap();
    let Some(deb) = build_package(temp.path()) else { return };

    // Control fields.
    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    let cargo_toml = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let workspace_version = cargo_toml
        .split("[workspace.package]")
        .nth(1)
        .and_then(|section| section.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim().trim_matches('"').replacen('-', "~", 1))
        .expect("[workspace.package] version in Cargo.toml");
    assert_eq!(control_field(&info, "Package"), "gatehouse");
    assert_eq!(control_field(&info, "Version"), workspace_version);
    let host_arch = stdout(Command::new("dpkg").arg("--print-architecture")).trim().to_string();
    assert_eq!(control_field(&info, "Architecture"), host_arch);
    let depends = control_field(&info, "Depends");
    assert!(depends.starts_with("adduser, libc6 (>= 2."), "Depends: {depends}");
    assert!(!depends.contains("dbus"), "libdbus is vendored, not a dependency: {depends}");
    assert_eq!(control_field(&info, "Recommends"), "bluez");
    assert_eq!(control_field(&info, "Section"), "net");
    assert!(control_field(&info, "Maintainer").contains('<'));
    assert!(info.contains(" Description: "), "{info}");
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        assert!(info.contains(script), "no {script} in the control archive:\n{info}");
    }

    // Contents: every file belongs to root, and the binary is executable.
    let contents = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for (path, mode) in [
        ("./usr/bin/gatehouse", "-rwxr-xr-x"),
        ("./lib/systemd/system/gatehouse.service", "-rw-r--r--"),
        ("./etc/gatehouse/gatehouse.toml", "-rw-r--r--"),
        ("./usr/share/gatehouse/ui/index.html", "-rw-r--r--"),
        ("./usr/share/doc/gatehouse/copyright", "-rw-r--r--"),
    ] {
        let line = contents
            .lines()
            .find(|line| line.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{contents}"));
        assert!(line.starts_with(&format!("{mode} root/root ")), "{line}");
    }
    assert!(contents.lines().all(|line| line.contains(" root/root ")), "files not owned by root:\n{contents}");

    // The same files, extracted.
    let root = temp.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = temp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap(), format!("{CONFFILE}\n"));
    let version = stdout(Command::new(root.join("usr/bin/gatehouse")).arg("--version"));
    assert!(version.starts_with("gatehouse "), "the packaged binary runs: {version}");
    assert_eq!(
        std::fs::read(root.join("usr/share/gatehouse/ui/index.html")).unwrap(),
        std::fs::read(workspace().join("ui/dist/index.html")).unwrap()
    );
    let copyright = std::fs::read_to_string(root.join("usr/share/doc/gatehouse/copyright")).unwrap();
    assert!(copyright.contains("License: Apache-2.0"), "{copyright}");

    // The config file as shipped, and with every "#key = default" line switched on, is accepted
    // by the daemon (unknown keys and bad values stop it). Flags keep the listeners on loopback.
    let shipped = std::fs::read_to_string(root.join("etc/gatehouse/gatehouse.toml")).unwrap();
    let defaults: String = shipped
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) && rest.contains(" = ") => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(defaults.lines().filter(|l| l.contains(" = ")).count() >= 10, "defaults switched on:\n{defaults}");
    for config in [shipped.as_str(), defaults.as_str()] {
        let mut daemon = Daemon::start_with_config(config, &[]);
        let (status, body) = http_get(daemon.runtime.http, "/api/health");
        assert_eq!(status, 200, "{body}");
        daemon.stop();
    }

    verify_unit(&root);
}

/// `systemd-analyze verify` on the extracted package (with the host's targets and slices for
/// the unit's dependencies), then `systemd-analyze security`. verify exits 0 for misspelt keys
/// and bad values, only warning about them, so any message about the unit fails the test.
fn verify_unit(root: &Path) {
    let Some(analyze) = require_tool("systemd-analyze") else { return };
    let units = root.join("lib/systemd/system");
    for entry in std::fs::read_dir("/lib/systemd/system").expect("the host's systemd units") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "target" || ext == "slice") {
            std::fs::copy(&path, units.join(path.file_name().unwrap())).unwrap();
        }
    }
    let output = Command::new(&analyze)
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("gatehouse.service")
        .output()
        .expect("run systemd-analyze verify");
    let messages = String::from_utf8_lossy(&output.stderr).to_string() + &String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !messages.contains("gatehouse"),
        "systemd-analyze verify of {UNIT} ({}):\n{messages}",
        output.status
    );

    let report = stdout(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--root={}", root.display()))
            .arg("gatehouse.service"),
    );
    let exposure: f64 = report
        .lines()
        .find_map(|line| line.split("Overall exposure level for gatehouse.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    println!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= MAX_EXPOSURE, "exposure {exposure} > {MAX_EXPOSURE}:\n{report}");
}

/// Purges the package (and stops the daemon) when the install test ends early.
struct Installed {
    daemon: Option<Child>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let _ = Command::new("dpkg").args(["--purge", "gatehouse"]).status();
        }
    }
}

fn user_exists(name: &str, database: &str) -> bool {
    Command::new("getent").args([database, name]).stdout(Stdio::null()).status().unwrap().success()
}

fn package_status() -> String {
    let output = Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "gatehouse"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Whether installing the package here is safe and possible; the reason when not.
fn install_refused() -> Option<String> {
    // /proc/self belongs to the effective user.
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX) != 0 {
        return Some("installing the package needs root".into());
    }
    for tool in ["dpkg", "dpkg-query", "getent", "setpriv", "adduser"] {
        if require_tool(tool).is_none() {
            return Some(format!("{tool} is missing"));
        }
    }
    if Path::new("/run/systemd/system").exists() {
        return Some("systemd is running here: installing would start gatehouse.service on its default ports".into());
    }
    let status = package_status();
    if !status.is_empty() && status != "not-installed" {
        return Some(format!(
            "the gatehouse package is already on this machine ({status}); purging it would delete its data"
        ));
    }
    if user_exists("gatehouse", "passwd")
        || user_exists("gatehouse", "group")
        || Path::new("/var/lib/gatehouse").exists()
    {
        return Some("a gatehouse user, group or /var/lib/gatehouse already exists here".into());
    }
    None
}

#[test]
fn the_package_installs_runs_as_its_own_user_and_purges_cleanly() {
    if let Some(reason) = install_refused() {
        skip(&reason);
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let Some(deb) = build_package(temp.path()) else { return };
    let mut installed = Installed { daemon: None };

    // Installed twice: the second run is the upgrade path of the maintainer scripts.
    run(Command::new("dpkg").arg("-i").arg(&deb));
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert_eq!(package_status(), "installed");
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "gatehouse"]));
    assert!(conffiles.contains(CONFFILE), "{conffiles}");
    for path in
        ["/usr/bin/gatehouse", "/lib/systemd/system/gatehouse.service", CONFFILE, "/usr/share/gatehouse/ui/index.html"]
    {
        assert!(Path::new(path).is_file(), "{path} is not installed");
    }
    // Enabled for the next boot, even though systemd is not running here.
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/gatehouse.service");
    assert!(wants.is_symlink(), "{} does not exist", wants.display());

    // The system user and its data directory.
    let passwd = stdout(Command::new("getent").args(["passwd", "gatehouse"]));
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    let gid: u32 = fields[3].parse().unwrap();
    assert!(uid < 1000, "a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/gatehouse", "{passwd}");
    assert!(fields[6].ends_with("nologin") || fields[6].ends_with("false"), "no login shell: {passwd}");
    assert_eq!(stdout(Command::new("getent").args(["group", "gatehouse"])).split(':').nth(2).unwrap(), gid.to_string());
    let state = std::fs::metadata("/var/lib/gatehouse").expect("/var/lib/gatehouse exists");
    let owner_mode = (state.uid(), state.gid(), format!("{:o}", state.mode() & 0o7777));
    assert_eq!(owner_mode, (uid, gid, "750".to_string()), "owner, group and mode of /var/lib/gatehouse");

    // The installed binary as that user, with the installed config file, in a data directory it
    // creates itself under /var/lib/gatehouse (so purge must remove what the daemon wrote).
    let data_dir = PathBuf::from(format!("/var/lib/gatehouse/test-{}", std::process::id()));
    let log_path = temp.path().join("gatehouse.log");
    let child = Command::new("setpriv")
        .args(["--reuid=gatehouse", "--regid=gatehouse", "--init-groups", "--no-new-privs", "--"])
        .arg("/usr/bin/gatehouse")
        .arg("run")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--config", CONFFILE])
        .args(["--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--mqtt-tls", "off", "--mqtt-ws", "off", "--mqtt-wss", "off", "--ingest", "off", "--no-ble"])
        .env("NO_COLOR", "1")
        .env("HOME", "/var/lib/gatehouse")
        // As on a LAN-facing install (http.listen not loopback), which this test may not open.
        .env("GATEHOUSE_HTTP_REQUIRE_LOGIN", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start the installed gatehouse");
    let pid = child.id();
    installed.daemon = Some(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let runtime_file = data_dir.join("gatehouse.runtime.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    let http: SocketAddr = loop {
        let runtime = std::fs::read_to_string(&runtime_file).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
        if let Some(addr) = runtime.as_ref().and_then(|r| r["http"].as_str()).and_then(|a| a.parse().ok()) {
            break addr;
        }
        if let Some(status) = installed.daemon.as_mut().unwrap().try_wait().unwrap() {
            panic!("the installed gatehouse exited during start ({status}):\n{}", log());
        }
        assert!(Instant::now() < deadline, "no runtime file within 30 s:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (status, body) = http_get(http, "/api/health");
    assert_eq!(status, 200, "{body}\n{}", log());
    assert!(body.contains(r#""status":"ok""#), "{body}");
    // The UI comes from /usr/share/gatehouse/ui, found next to /usr/bin without --ui-dir.
    let (status, page) = http_get(http, "/");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page, std::fs::read_to_string("/usr/share/gatehouse/ui/index.html").unwrap());

    let (status, body) = http_get(http, "/api/devices");
    assert_eq!(status, 401, "the login is on: {body}");

    // What docs/packaging.md tells the administrator: the setup code for the first login is in
    // the data directory, readable by gatehouse only, and the CLI run as gatehouse gets in with
    // the local API token.
    let setup_code = std::fs::metadata(data_dir.join("setup-code")).expect("the setup code file");
    assert_eq!((setup_code.uid(), setup_code.mode() & 0o777), (uid, 0o600), "setup-code owner and mode");
    assert!(log().contains("setup code"), "the setup code is logged:\n{}", log());
    let devices = Command::new("setpriv")
        .args(["--reuid=gatehouse", "--regid=gatehouse", "--init-groups", "--"])
        .args(["/usr/bin/gatehouse", "devices", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(devices.status.success(), "gatehouse devices as gatehouse: {}", String::from_utf8_lossy(&devices.stderr));

    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uids.split_whitespace().skip(1).all(|id| id == uid.to_string()), "runs as gatehouse: {uids}");
    let data = std::fs::metadata(&data_dir).unwrap();
    assert_eq!((data.uid(), data.gid()), (uid, gid), "the daemon created its data directory as gatehouse");
    assert!(data_dir.join("gatehouse.db").is_file());

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut child = installed.daemon.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gatehouse did not stop within 15 s of SIGTERM:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "gatehouse exited with {exit} after SIGTERM:\n{}", log());

    // Remove keeps the configuration, the data and the user; purge takes them all.
    run(Command::new("dpkg").args(["--remove", "gatehouse"]));
    assert_eq!(package_status(), "config-files");
    assert!(!Path::new("/usr/bin/gatehouse").exists() && !Path::new("/lib/systemd/system/gatehouse.service").exists());
    assert!(Path::new(CONFFILE).is_file() && data_dir.join("gatehouse.db").is_file());
    assert!(user_exists("gatehouse", "passwd"));

    run(Command::new("dpkg").args(["--purge", "gatehouse"]));
    assert!(matches!(package_status().as_str(), "" | "not-installed"), "{}", package_status());
    assert!(!user_exists("gatehouse", "passwd"), "the user gatehouse is still there");
    assert!(!user_exists("gatehouse", "group"), "the group gatehouse is still there");
    for path in ["/var/lib/gatehouse", "/etc/gatehouse", "/usr/share/gatehouse", "/usr/share/doc/gatehouse"] {
        assert!(!Path::new(path).exists(), "{path} is still there after purge");
    }
    assert!(!wants.is_symlink(), "{} is still there after purge", wants.display());
}
