//! A fake BlueZ for the Bluetooth tests: a private D-Bus system bus (`dbus-daemon`) with
//! python-dbusmock playing bluetoothd (template `tests/fixtures/ruuvi_bluez.py`). The gateway's
//! real btleplug code talks to it through `DBUS_SYSTEM_BUS_ADDRESS`; the test drives it
//! (adapters, advertisements, power, restarts) through the same bus.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dbus::blocking::Connection;

const MOCK_IFACE: &str = "org.bluez.Mock";
const PYTHON: &str = "/usr/bin/python3";

pub const ADAPTER: &str = "hci0";

pub struct FakeBluez {
    dir: tempfile::TempDir,
    bus: Option<Child>,
    bluetoothd: Option<Child>,
    pub address: String,
}

impl FakeBluez {
    /// Starts the bus and the fake bluetoothd (no adapter yet). `None` when the tools are missing
    /// outside CI (in CI that panics: `scripts/setup.sh test` installs them).
    pub fn start() -> Option<FakeBluez> {
        crate::require_tool("dbus-daemon")?;
        let has_dbusmock = Command::new(PYTHON)
            .args(["-c", "import dbusmock"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_dbusmock {
            if std::env::var_os("CI").is_some() {
                panic!("python3-dbusmock is required in CI; scripts/setup.sh test installs it");
            }
            eprintln!("SKIPPED: python3-dbusmock is not installed (run `make test`, which installs it)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("system_bus_socket");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={}</listen>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy>
</busconfig>"#,
                socket.display()
            ),
        )
        .expect("bus config");
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let address = format!("unix:path={}", socket.display());
        let mut fake = FakeBluez { dir, bus: Some(bus), bluetoothd: None, address };
        wait_until(Duration::from_secs(10), || socket.exists(), "the private bus socket");
        fake.start_bluetoothd();
        Some(fake)
    }

    fn start_bluetoothd(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("bluetoothd.log")).expect("log");
        let child = Command::new(PYTHON)
            .args(["-m", "dbusmock", "--system", "--template"])
            .arg(fixture())
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dbusmock");
        self.bluetoothd = Some(child);
        wait_until(Duration::from_secs(15), || self.has_bluez(), "the fake bluetoothd on the bus");
    }

    fn connection(&self) -> Connection {
        let mut channel = dbus::channel::Channel::open_private(&self.address).expect("connect to the private bus");
        channel.register().expect("register on the private bus");
        Connection::from(channel)
    }

    fn has_bluez(&self) -> bool {
        let Ok(mut channel) = dbus::channel::Channel::open_private(&self.address) else { return false };
        if channel.register().is_err() {
            return false;
        }
        let conn = Connection::from(channel);
        let proxy = conn.with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", Duration::from_secs(2));
        let answer: Result<(bool,), _> = proxy.method_call("org.freedesktop.DBus", "NameHasOwner", ("org.bluez",));
        answer.is_ok_and(|(owned,)| owned)
    }

    fn mock<A: dbus::arg::AppendAll, R: dbus::arg::ReadAll>(&self, method: &str, args: A) -> R {
        let conn = self.connection();
        let proxy = conn.with_proxy("org.bluez", "/", Duration::from_secs(5));
        proxy.method_call(MOCK_IFACE, method, args).unwrap_or_else(|e| panic!("fake BlueZ {method}: {e}"))
    }

    pub fn add_adapter(&self) {
        let _: (String,) = self.mock("AddAdapter", (ADAPTER, "gatehouse-test"));
    }

    /// One advertisement with manufacturer data; false if the adapter was not discovering.
    pub fn advertise(&self, address: &str, company: u16, data: &[u8], rssi: i16) -> bool {
        let (path,): (String,) = self.mock("Advertise", (ADAPTER, address, company, data.to_vec(), rssi));
        !path.is_empty()
    }

    pub fn vanish(&self, address: &str) {
        let _: () = self.mock("Vanish", (ADAPTER, address));
    }

    pub fn set_powered(&self, powered: bool) {
        let _: () = self.mock("SetAdapterPowered", (ADAPTER, powered));
    }

    /// Stops discovery behind the scanner's back (btleplug reports nothing).
    pub fn interrupt_discovery(&self) {
        let _: () = self.mock("InterruptDiscovery", (ADAPTER,));
    }

    /// Connections on the bus now (unique names), the fake bluetoothd's included.
    pub fn connection_count(&self) -> usize {
        let conn = self.connection();
        let proxy = conn.with_proxy("org.freedesktop.DBus", "/org/freedesktop/DBus", Duration::from_secs(2));
        let (names,): (Vec<String>,) = proxy.method_call("org.freedesktop.DBus", "ListNames", ()).expect("ListNames");
        // Minus this query's own connection.
        names.iter().filter(|n| n.starts_with(':')).count() - 1
    }

    pub fn discovery_starts(&self) -> u32 {
        let (n,): (u32,) = self.mock("DiscoveryStarts", (ADAPTER,));
        n
    }

    /// Kills the fake bluetoothd and starts a new one with the adapter (not discovering), as
    /// `systemctl restart bluetooth` does.
    pub fn restart_bluetoothd(&mut self) {
        if let Some(mut child) = self.bluetoothd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until(Duration::from_secs(10), || !self.has_bluez(), "the old fake bluetoothd to leave the bus");
        self.start_bluetoothd();
        self.add_adapter();
    }

    /// Kills the bus itself: every D-Bus connection of the gateway dies with it.
    pub fn kill_bus(&mut self) {
        for child in [self.bluetoothd.take(), self.bus.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bluetoothd.log")).unwrap_or_default()
    }
}

impl Drop for FakeBluez {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- fake bluetoothd log ----\n{}", self.log());
        }
        self.kill_bus();
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("ruuvi_bluez.py")
}

fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
