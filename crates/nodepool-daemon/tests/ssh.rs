//! The SSH client against a real OpenSSH server, started by the test on a free port with
//! keys made for it. Needs Debian's `openssh-server` (`.ci/run` installs it); without it the
//! tests are skipped on a laptop and fail under `CI=true`.

// Skipping says so on stderr, as the other suites do.
#![allow(clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nodepool_daemon::{Remote, RemoteError, SshRemote, Target};

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path, kind: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", kind, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An sshd for the current user, accepting the key `client` (and only it).
fn sshd() -> Option<Sshd> {
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
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
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

fn target(sshd: &Sshd, key: &str) -> Target {
    Target {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: sshd.port,
        user: whoami(),
        key: sshd.dir.path().join(key),
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn runs_commands_with_their_status_and_output() {
    let Some(sshd) = sshd() else { return };
    let ssh = SshRemote::new();
    let output = ssh
        .run(&target(&sshd, "client"), "echo out; echo err >&2; exit 3")
        .await
        .unwrap();
    assert_eq!(output.status, 3);
    assert!(
        output.output.contains("out\n") && output.output.contains("err\n"),
        "{output:?}"
    );
    // An RSA key (2014's id_rsa) works too.
    let output = ssh
        .run(&target(&sshd, "rsa-client"), "echo access okay")
        .await
        .unwrap();
    assert_eq!(
        (output.status, output.output.as_str()),
        (0, "access okay\n")
    );
}

#[tokio::test]
async fn uploads_files_with_their_mode() {
    let Some(sshd) = sshd() else { return };
    let ssh = SshRemote::new();
    let path: PathBuf = sshd.dir.path().join("it's a script.sh");
    ssh.upload(
        &target(&sshd, "client"),
        path.to_str().unwrap(),
        b"#!/bin/sh\necho set up\n",
        0o755,
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "#!/bin/sh\necho set up\n"
    );
    let output = ssh
        .run(
            &target(&sshd, "client"),
            &format!("'{}'", path.display().to_string().replace('\'', r"'\''")),
        )
        .await
        .unwrap();
    assert_eq!(output.output, "set up\n");
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error_and_a_closed_port_is_unreachable() {
    let Some(sshd) = sshd() else { return };
    let ssh = SshRemote::new();
    keygen(&sshd.dir.path().join("stranger"), "ed25519");
    let error = ssh
        .run(&target(&sshd, "stranger"), "true")
        .await
        .unwrap_err();
    assert!(matches!(error, RemoteError::Auth { .. }), "{error}");
    let mut closed = target(&sshd, "client");
    closed.port = free_port();
    let error = ssh.run(&closed, "true").await.unwrap_err();
    assert!(matches!(error, RemoteError::Unreachable { .. }), "{error}");
    let missing = Target {
        key: sshd.dir.path().join("no-such-key"),
        ..target(&sshd, "client")
    };
    let error = ssh.run(&missing, "true").await.unwrap_err();
    assert!(
        error.to_string().contains("cannot read the private key"),
        "{error}"
    );
}
