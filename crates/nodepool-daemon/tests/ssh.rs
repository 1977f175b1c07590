//! The SSH client against a real OpenSSH server, started by the test on a free port with
//! keys made for it. Needs Debian's `openssh-server` (`.ci/run` installs it); without it the
//! tests are skipped on a laptop and fail under `CI=true`.

// Skipping says so on stderr, as the other suites do.
#![allow(clippy::print_stderr)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use nodepool_daemon::{Remote, RemoteError, SshRemote, Target};
use support::{Sshd, free_port, keygen, sshd, whoami};

fn target(sshd: &Sshd, key: &str) -> Target {
    Target {
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: sshd.port,
        user: whoami(),
        key: sshd.dir.path().join(key),
        host_key: None,
    }
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
    // The server's host key comes back as it would stand in known_hosts, without comment.
    let public = std::fs::read_to_string(sshd.dir.path().join("host.pub")).unwrap();
    let expected: Vec<&str> = public.split_whitespace().take(2).collect();
    assert_eq!(output.host_key, Some(expected.join(" ")));
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

#[tokio::test]
async fn a_pinned_host_key_is_the_only_one_accepted_and_output_is_kept_to_its_end() {
    let Some(sshd) = sshd() else { return };
    let ssh = SshRemote::new();
    let first = ssh
        .run(&target(&sshd, "client"), "true")
        .await
        .unwrap()
        .host_key
        .unwrap();
    let mut pinned = target(&sshd, "client");
    pinned.host_key = Some(first.clone());
    assert_eq!(
        ssh.run(&pinned, "echo same").await.unwrap().output,
        "same\n"
    );
    // Another key pinned: refused before anything is sent.
    let marker = sshd.dir.path().join("ran");
    pinned.host_key = Some(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOtherKey0".into(),
    );
    let error = ssh
        .run(&pinned, &format!("touch '{}'", marker.display()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, RemoteError::HostKey { presented, .. } if *presented == first),
        "{error:?}"
    );
    assert!(!marker.exists(), "nothing ran on a server with another key");
    // A command that prints 300 kB: its last 64 kB are kept.
    let output = ssh
        .run(&target(&sshd, "client"), "seq 1 60000; echo the end")
        .await
        .unwrap();
    assert!(output.output.len() <= 64 * 1024, "{}", output.output.len());
    assert!(output.output.ends_with("60000\nthe end\n"));
}
