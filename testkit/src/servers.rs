//! Real servers for the tests: mosquitto and redis-server on loopback ports in temporary
//! directories, stopped when dropped.
//!
//! Neither server can take port 0 and say which port it got, so a port is picked free and
//! handed over; another process may take it in between. A server that then cannot listen
//! exits, and it is started again on another port (a few times at most), so tests do not
//! race for ports.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts of a server tried before a test gives up.
const TRIES: usize = 5;

/// A loopback port nobody listened on a moment ago.
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits until `child` listens on `port`: `false` if it exits first (it could not bind).
fn listening(child: &mut Child, port: u16, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Someone listens; a server that lost the port to them exits about now.
            std::thread::sleep(Duration::from_millis(30));
            return matches!(child.try_wait(), Ok(None));
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

/// SIGTERM, then SIGKILL after 5 s.
pub(crate) fn stop_child(child: &mut Child) {
    signal(child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A mosquitto on a free loopback port. With `persistence`, sessions and queued messages
/// survive a stop and start (saved on SIGTERM), as on a production broker.
pub struct Mosquitto {
    pub port: u16,
    /// A second listener with TLS, when started with [`Mosquitto::start_tls`].
    pub tls_port: Option<u16>,
    client_certs: Option<ClientCerts>,
    /// The text of its `acl_file`, when it has one.
    acl: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistence: bool,
    users: Vec<(String, String)>,
}

impl Mosquitto {
    pub fn start(persistence: bool, users: &[(&str, &str)]) -> Self {
        Self::new(persistence, users, None, None).0
    }

    /// With `users` and an `acl_file` holding `acl` (mosquitto's format: `user`, `topic`,
    /// `pattern` lines): what each account may read and write.
    pub fn start_with_acl(users: &[(&str, &str)], acl: &str) -> Self {
        Self::new(false, users, None, Some(acl)).0
    }

    /// Also listens with TLS, on a certificate for 127.0.0.1 signed by a fresh test CA;
    /// returns the broker and the CA's PEM file.
    pub fn start_tls(users: &[(&str, &str)]) -> (Self, PathBuf) {
        let (broker, ca) = Self::new(false, users, Some(ClientCerts::NotAsked), None);
        (broker, ca.expect("a CA"))
    }

    /// As [`Mosquitto::start_tls`], and the TLS listener refuses clients without a
    /// certificate from the test CA (`require_certificate true`); returns the files a
    /// client needs.
    pub fn start_mutual_tls(users: &[(&str, &str)]) -> (Self, TlsFiles) {
        let (broker, ca) = Self::new(false, users, Some(ClientCerts::Required), None);
        let ca = ca.expect("a CA");
        let files = TlsFiles {
            server_cert: ca.with_file_name("server.pem"),
            server_key: ca.with_file_name("server.key"),
            client_cert: ca.with_file_name("client.pem"),
            client_key: ca.with_file_name("client.key"),
            ca,
            client_certs: ClientCerts::Required,
        };
        (broker, files)
    }

    fn new(
        persistence: bool,
        users: &[(&str, &str)],
        tls: Option<ClientCerts>,
        acl: Option<&str>,
    ) -> (Self, Option<PathBuf>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Started as root, mosquitto drops to the `mosquitto` user: it must still be able to
        // write its log and persistence file here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("permissions");
        let ca = tls.map(|_| test_ca(dir.path()));
        let mut broker = Self {
            port: 0,
            tls_port: None,
            client_certs: tls,
            acl: acl.map(str::to_owned),
            dir,
            child: None,
            persistence,
            users: users
                .iter()
                .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
                .collect(),
        };
        for _ in 0..TRIES {
            broker.port = unused_port();
            broker.tls_port = tls.map(|_| unused_port());
            broker.write_config();
            if broker.launch() {
                return (broker, ca);
            }
        }
        panic!(
            "mosquitto could not listen in {TRIES} tries:\n{}",
            broker.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let mut conf = format!(
            "listener {} 127.0.0.1\npersistence {}\npersistence_location {}/\nlog_dest file {}/mosquitto.log\nlog_type all\nmax_queued_messages 10000\n",
            self.port,
            self.persistence,
            d.display(),
            d.display()
        );
        if self.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let pw = d.join("passwd");
            std::fs::write(&pw, "").expect("a password file");
            for (u, p) in &self.users {
                let ok = Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg(&pw)
                    .args([u, p])
                    .status()
                    .expect("mosquitto_passwd is installed by `make setup`");
                assert!(ok.success(), "mosquitto_passwd failed");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                pw.display()
            ));
        }
        if let Some(acl) = &self.acl {
            let path = d.join("acl");
            std::fs::write(&path, acl).expect("an acl file");
            conf.push_str(&format!("acl_file {}\n", path.display()));
        }
        if let Some(tls) = self.tls_port {
            conf.push_str(&format!(
                "listener {tls} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n",
                d = d.display()
            ));
            if self.client_certs == Some(ClientCerts::Required) {
                conf.push_str(&format!(
                    "cafile {d}/ca.pem\nrequire_certificate true\n",
                    d = d.display()
                ));
            }
        }
        std::fs::write(d.join("mosquitto.conf"), conf).expect("mosquitto.conf");
    }

    /// Starts mosquitto on its configuration; `false` when it could not listen.
    fn launch(&mut self) -> bool {
        let mut child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed by `make setup`");
        let up = listening(&mut child, self.port, "mosquitto")
            && self
                .tls_port
                .is_none_or(|tls| listening(&mut child, tls, "mosquitto (TLS)"));
        if up {
            self.child = Some(child);
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
        up
    }

    /// SIGTERM and wait: with persistence, mosquitto saves its sessions first.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    /// Starts it again on the same port (a client reconnects to where it was).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "mosquitto is still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "mosquitto could not listen on its port again:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Replaces the password file and makes mosquitto re-read it (SIGHUP).
    pub fn set_users(&mut self, users: &[(&str, &str)]) {
        self.users = users
            .iter()
            .map(|(u, p)| ((*u).to_owned(), (*p).to_owned()))
            .collect();
        self.write_config();
        if let Some(child) = &self.child {
            signal(child, "HUP");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private CA in `dir`, a certificate for 127.0.0.1 and a client certificate signed by it:
/// for a TLS server of the tests' own (the service's HTTPS).
pub fn test_certificates(dir: &std::path::Path) -> TlsFiles {
    let ca = test_ca(dir);
    TlsFiles {
        ca,
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        client_certs: ClientCerts::NotAsked,
    }
}

/// A private CA, a server certificate for 127.0.0.1 (`server.pem`, `server.key`) and a
/// client certificate (`client.pem`, `client.key`) signed by it, in `d`; returns the CA's PEM.
fn test_ca(d: &std::path::Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl is installed by `make setup`");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
    // An extension makes the certificate X.509 v3, the only version rustls accepts.
    std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("client.ext");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sharpeyes test CA",
    ]);
    // A key and a certificate signed by the CA: `{name}.key`, `{name}.pem`, with the
    // extensions of `{ext}` (which also make it X.509 v3).
    let signed = |name: &str, subject: &str, ext: &str| {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext,
        ]);
    };
    signed("server", "/CN=127.0.0.1", "san.ext");
    // A client certificate from the same CA, for servers that ask for one.
    signed("client", "/CN=sharpeyes test client", "client.ext");
    // mosquitto reads the key after dropping root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("server.key"), std::fs::Permissions::from_mode(0o644))
        .expect("permissions");
    d.join("ca.pem")
}

/// A redis-server on a free loopback port, nothing saved to disk.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    password: Option<String>,
    tls: Option<TlsFiles>,
    /// Appends every write to a file (fsync each), as production Redis should: a stop and
    /// start keeps the data.
    persistent: bool,
    child: Option<Child>,
}

/// Whether a TLS server asks its clients for a certificate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// redis `tls-auth-clients no`; mosquitto's default.
    NotAsked,
    /// `tls-auth-clients yes`: a client without a certificate from the CA is refused.
    Required,
}

/// The test CA of a TLS server, and a client certificate it signed.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    client_certs: ClientCerts,
}

impl Redis {
    pub fn start(password: Option<&str>) -> Self {
        Self::new(password, None)
    }

    /// Keeps its data across [`Redis::stop`] and [`Redis::start_again`] (an append-only
    /// file, fsynced at every write), as a production Redis that holds outboxes must.
    pub fn start_persistent() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self::launched(dir, None, None, true)
    }

    /// Listens with TLS only (no plain port), on a certificate for 127.0.0.1 from a fresh
    /// test CA; returns the server and the files a client needs.
    pub fn start_tls(password: Option<&str>, client_certs: ClientCerts) -> (Self, TlsFiles) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = test_ca(dir.path());
        let tls = TlsFiles {
            ca,
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server.key"),
            client_cert: dir.path().join("client.pem"),
            client_key: dir.path().join("client.key"),
            client_certs,
        };
        let redis = Self::new_in(dir, password, Some(tls.clone()));
        (redis, tls)
    }

    fn new(password: Option<&str>, tls: Option<TlsFiles>) -> Self {
        Self::new_in(
            tempfile::tempdir().expect("a temporary directory"),
            password,
            tls,
        )
    }

    fn new_in(dir: tempfile::TempDir, password: Option<&str>, tls: Option<TlsFiles>) -> Self {
        Self::launched(dir, password, tls, false)
    }

    fn launched(
        dir: tempfile::TempDir,
        password: Option<&str>,
        tls: Option<TlsFiles>,
        persistent: bool,
    ) -> Self {
        let mut redis = Self {
            port: 0,
            dir,
            password: password.map(str::to_owned),
            tls,
            persistent,
            child: None,
        };
        for _ in 0..TRIES {
            redis.port = unused_port();
            if redis.launch() {
                return redis;
            }
        }
        panic!("redis-server could not listen in {TRIES} tries");
    }

    fn launch(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(tls) => {
                let d = self.dir.path();
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(d.join("server.pem"))
                    .arg("--tls-key-file")
                    .arg(d.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args([
                        "--tls-auth-clients",
                        match tls.client_certs {
                            ClientCerts::NotAsked => "no",
                            ClientCerts::Required => "yes",
                        },
                    ])
            }
        };
        cmd.args(["--bind", "127.0.0.1"]);
        if self.persistent {
            cmd.args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]);
        } else {
            cmd.args(["--save", "", "--appendonly", "no"]);
        }
        cmd.arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        let mut child = cmd
            .spawn()
            .expect("redis-server is installed by `make setup`");
        if listening(&mut child, self.port, "redis-server") {
            self.child = Some(child);
            true
        } else {
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }
}

impl Redis {
    /// Stops it (its data is gone unless it is persistent).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    /// Starts it again on the same port: empty, or as it was when persistent.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "running already");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.launch() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server could not listen on {} again",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}
