//! A real Mosquitto (Debian's package) on a free loopback port, with a password file, an ACL
//! file and optional persistence, that a test can stop and start again on the same port: the
//! "upstream broker" of the bridge tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_tool;

pub struct Mosquitto {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// `users` get passwords; `acl` is Mosquitto's ACL file text (`user x` / `topic readwrite …`).
    /// With `persistence`, sessions and queued messages survive [`Mosquitto::stop`].
    pub fn start(users: &[(&str, &str)], acl: &str, persistence: bool) -> Mosquitto {
        let binary = require_tool("/usr/sbin/mosquitto").expect("mosquitto is installed (scripts/setup.sh test)");
        let passwd_tool = require_tool("mosquitto_passwd").expect("mosquitto_passwd is installed");
        let dir = tempfile::Builder::new().prefix("gatehouse-mosquitto-").tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, "").unwrap();
        for (user, password) in users {
            let status = Command::new(&passwd_tool).arg("-b").arg(&passwd).args([user, password]).status().unwrap();
            assert!(status.success(), "mosquitto_passwd for {user}");
        }
        let acl_file = dir.path().join("acl");
        std::fs::write(&acl_file, acl).unwrap();
        let mut config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             max_queued_messages 100000\nuser root\nlog_type all\n",
            passwd.display(),
            acl_file.display()
        );
        if persistence {
            config.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.path().display()
            ));
        }
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let mut broker = Mosquitto { addr: ([127, 0, 0, 1], port).into(), dir, binary, child: None };
        broker.start_again();
        broker
    }

    /// Starts the broker (again) with the same configuration, port and persistence file.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mosquitto exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen on {}:\n{}", self.addr, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as a service manager stops it: Mosquitto saves its persistence file first.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
