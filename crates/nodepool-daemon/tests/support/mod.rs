//! Shared by the daemon's integration tests: a real OpenSSH server on a free port.

// Skipping says so on stderr, as the other suites do.
#![allow(clippy::print_stderr, dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd; killed when dropped.
pub(crate) struct Sshd {
    child: Child,
    /// Its port.
    pub(crate) port: u16,
    /// Its keys: `client` and `rsa-client` may log in.
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes a key pair at `path` (and `path.pub`).
pub(crate) fn keygen(path: &Path, kind: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", kind, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

/// A TCP port nothing listens on.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An sshd for the current user on 127.0.0.0/8, accepting the keys `client` and
/// `rsa-client`; `None` (after saying why) when sshd is missing and this is not CI.
pub(crate) fn sshd() -> Option<Sshd> {
    if !Path::new(SSHD).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{SSHD} is missing: install openssh-server (CI must run these tests)"
        );
        eprintln!("skipped: {SSHD} is missing (install openssh-server to run the SSH tests)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("host"), "ed25519");
    keygen(&dir.path().join("client"), "ed25519");
    keygen(&dir.path().join("rsa-client"), "rsa");
    let mut authorized = std::fs::read_to_string(dir.path().join("client.pub")).unwrap();
    authorized.push_str(&std::fs::read_to_string(dir.path().join("rsa-client.pub")).unwrap());
    std::fs::write(dir.path().join("authorized_keys"), authorized).unwrap();
    let port = free_port();
    let config = format!(
        "Port {port}\nListenAddress 0.0.0.0\nAllowUsers *@127.*\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
         PidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
        d = dir.path().display()
    );
    std::fs::write(dir.path().join("sshd_config"), config).unwrap();
    // sshd wants its privilege separation folder.
    std::fs::create_dir_all("/run/sshd").ok();
    let mut child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.path().join("sshd_config"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("sshd starts");
    // sshd logs "Server listening on ..." once it accepts connections.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    loop {
        let line = lines
            .next()
            .expect("sshd reported nothing before exiting")
            .unwrap();
        if line.contains("Server listening") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Some(Sshd { child, port, dir })
}

/// The user the tests run as.
pub(crate) fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A setting of the local cloud (`cargo xtask cloud env` exports them), or its default.
pub(crate) fn cloud_env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Logs in to the local OpenStack (`cargo xtask cloud up`) as its admin; `None` (after
/// saying why) when it is not running and this is not CI, where `needed_by` fails loudly.
pub(crate) async fn local_cloud(needed_by: &str) -> Option<nodepool_openstack::OpenStackProvider> {
    let mut settings = nodepool_config::OpenStackSettings::default();
    settings.auth_url = Some(cloud_env("OS_AUTH_URL", "http://127.0.0.1:5000/v3"));
    settings.username = Some(cloud_env("OS_USERNAME", "admin"));
    settings.password = Some(nodepool_config::Secret::new(cloud_env(
        "OS_PASSWORD",
        "admin",
    )));
    settings.project = Some(nodepool_config::Project::Name(cloud_env(
        "OS_PROJECT_NAME",
        "admin",
    )));
    settings.region_name = Some(cloud_env("OS_REGION_NAME", "RegionOne"));
    let connected = nodepool_openstack::OpenStackProvider::connect(
        "local".parse().unwrap(),
        &settings,
        &nodepool_config::Environment::default(),
    )
    .await;
    match connected {
        Ok(provider) => Some(provider),
        Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{needed_by} needs the local OpenStack in CI: {error}")
        }
        Err(error) => {
            eprintln!("skipped: no local OpenStack ({error}); run `cargo xtask cloud up`");
            None
        }
    }
}

/// A `providers:` entry for the local cloud named `name`, whose image `base` is built from
/// the cloud's `base-image` and reached through this sshd (keys and scripts in `dir`).
/// `extra` holds more provider keys, each line indented by four spaces.
pub(crate) fn cloud_provider(name: &str, dir: &Path, port: u16, extra: &str) -> String {
    format!(
        "  - name: {name}
    auth-url: {auth}
    username: {user}
    password: {password}
    project-name: {project}
    region-name: {region}
{extra}    images:
      - name: base
        base-image: base-image
        min-ram: 64
        setup: prepare.sh
        username: {me}
        private-key: {dir}/client
        connection-port: {port}
",
        dir = dir.display(),
        auth = cloud_env("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
        user = cloud_env("OS_USERNAME", "admin"),
        password = cloud_env("OS_PASSWORD", "admin"),
        project = cloud_env("OS_PROJECT_NAME", "admin"),
        region = cloud_env("OS_REGION_NAME", "RegionOne"),
        me = whoami(),
    )
}

/// A database server the tests make their own databases in, through its command-line
/// client (so that no test needs a MySQL build to prepare a database).
#[derive(Clone, Copy, Debug)]
enum Server {
    /// PostgreSQL on 127.0.0.1:5432, as user `postgres`.
    Postgres,
    /// MariaDB (or MySQL) on 127.0.0.1:3306, as `root` without a password.
    Mariadb,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL at 127.0.0.1:5432",
            Server::Mariadb => "MariaDB at 127.0.0.1:3306",
        }
    }

    /// Runs `sql` as the server's administrator.
    fn run(self, sql: &str) -> std::io::Result<std::process::Output> {
        match self {
            Server::Postgres => Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q"])
                .args(["-c", sql])
                .output(),
            Server::Mariadb => Command::new("mysql")
                .args(["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-e", sql])
                .output(),
        }
    }
}

/// A database made for one test or benchmark run, dropped with this value. Without a
/// server it is `None`, with a note, on a developer's machine; under `CI=true` a missing
/// server fails the test.
pub(crate) struct ServerDb {
    server: Server,
    name: String,
}

impl ServerDb {
    /// A PostgreSQL database.
    pub(crate) fn postgres(purpose: &str) -> Option<ServerDb> {
        ServerDb::create(Server::Postgres, purpose)
    }

    /// A MariaDB database.
    pub(crate) fn mariadb(purpose: &str) -> Option<ServerDb> {
        ServerDb::create(Server::Mariadb, purpose)
    }

    fn create(server: Server, purpose: &str) -> Option<ServerDb> {
        let name = format!("nodepool_test_{}_{purpose}", std::process::id());
        let made = server
            .run(&format!("DROP DATABASE IF EXISTS {name}"))
            .and_then(|_| server.run(&format!("CREATE DATABASE {name}")));
        match made {
            Ok(out) if out.status.success() => Some(ServerDb { server, name }),
            other if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{purpose} needs {} in CI: {other:?}", server.name())
            }
            other => {
                eprintln!(
                    "skipped {purpose}: no {} ({other:?}); set CI=true to make this a failure",
                    server.name()
                );
                None
            }
        }
    }

    /// Its `dburi`.
    pub(crate) fn uri(&self) -> String {
        match self.server {
            Server::Postgres => format!("postgres://postgres@127.0.0.1:5432/{}", self.name),
            Server::Mariadb => format!("mysql://root@127.0.0.1:3306/{}", self.name),
        }
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let force = match self.server {
            // Connections a killed daemon left open would keep the database.
            Server::Postgres => " WITH (FORCE)",
            Server::Mariadb => "",
        };
        let _ = self
            .server
            .run(&format!("DROP DATABASE IF EXISTS {}{force}", self.name));
    }
}

/// A TCP relay to a server (the store's, say) that a test can cut: while cut, the
/// connections through it are closed and new ones are closed as soon as they are made,
/// as a database host that fell off the network looks to its clients.
pub(crate) struct Relay {
    /// The port to connect to instead of the server's.
    pub(crate) port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` (a new free port) to `target`.
    pub(crate) fn to(target: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (is_cut, connections) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if is_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let mut kept = connections.lock().unwrap();
                kept.extend(client.try_clone());
                kept.extend(server.try_clone());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, open }
    }

    /// Closes every connection through the relay, and every new one until [`Relay::mend`].
    pub(crate) fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays new connections again.
    pub(crate) fn mend(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A Keystone that refuses every login with a 401, as Keystone words it.
pub(crate) fn refusing_keystone() -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                // The request: headers, then as much body as Content-Length says.
                let mut seen = Vec::new();
                let mut buffer = [0_u8; 4096];
                loop {
                    let Ok(read) = stream.read(&mut buffer) else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&seen);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if seen.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}
