//! Running commands on nodes and template servers: SSH in production, a recording fake for
//! the fake cloud.
//!
//! The launch and build executors speak only [`Remote`]. [`FakeRemote`] answers for servers
//! of the fake cloud: it records every command and upload, and fails the ones a test asks it
//! to, so the zero-setup example runs with no SSH server anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;

/// Where and as whom to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The server's address.
    pub host: IpAddr,
    /// The SSH port.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The private key to log in with.
    pub key: PathBuf,
    /// The host key the server must present (OpenSSH's `TYPE BASE64`): the one it
    /// presented first in this launch or build, pinned for the rest of it. `None` takes
    /// whatever it presents (a new server, whose key nobody knows yet).
    pub host_key: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// What a command left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Its exit status.
    pub status: i32,
    /// Standard output and standard error, interleaved as they came.
    pub output: String,
    /// The host key the server presented on this connection, as an OpenSSH public key line
    /// (`ssh-ed25519 AAAA...`), if the transport has one.
    pub host_key: Option<String>,
}

/// Why a remote step failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// Nothing answered (yet): refused, unreachable, timed out. Worth retrying while booting.
    #[error("cannot reach {target}: {message}")]
    Unreachable {
        /// Where.
        target: String,
        /// What happened.
        message: String,
    },
    /// The server answered but refused the login.
    #[error("{target} refused the login: {message}")]
    Auth {
        /// Where.
        target: String,
        /// What happened.
        message: String,
    },
    /// The server presented another host key than the one pinned: not the server first
    /// reached (an address taken over, a man in the middle). Nothing was sent to it.
    #[error("{target} presented host key {presented}, not the {expected} it presented first")]
    HostKey {
        /// Where.
        target: String,
        /// The key pinned.
        expected: String,
        /// The key presented.
        presented: String,
    },
}

/// Runs commands and copies files on a server.
#[async_trait]
pub trait Remote: Send + Sync + fmt::Debug {
    /// Runs `command` through the login shell and returns its status and output.
    async fn run(&self, target: &Target, command: &str) -> Result<Output, RemoteError>;

    /// Writes `contents` to `path` on the server, with permissions `mode`.
    async fn upload(
        &self,
        target: &Target,
        path: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), RemoteError>;
}

/// One thing the fake did, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A command run.
    Run {
        /// Where.
        target: Target,
        /// What.
        command: String,
    },
    /// A file written.
    Upload {
        /// Where.
        target: Target,
        /// Which file.
        path: String,
        /// How many bytes.
        bytes: usize,
    },
}

#[derive(Debug, Default)]
struct FakeState {
    log: Vec<Recorded>,
    /// Commands containing the key exit with the status and print the output.
    scripted: BTreeMap<String, (i32, String)>,
    /// Host keys set by the test, by host; others get one made from their address.
    host_keys: BTreeMap<IpAddr, String>,
    /// How many more connection attempts are refused.
    refusals: usize,
    /// Users that may not log in.
    refused_users: Vec<String>,
    /// Hosts that do not answer at all.
    unplugged: Vec<IpAddr>,
}

/// A remote for the fake cloud: every server answers at once, every command succeeds unless
/// told otherwise, and everything is recorded.
#[derive(Debug, Default)]
pub struct FakeRemote {
    state: Mutex<FakeState>,
}

impl FakeRemote {
    /// A fake where everything works.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A panic while recording leaves a usable log.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every command containing `needle` exits with `status`.
    pub fn fail_commands(&self, needle: &str, status: i32) {
        let output = format!("{needle}: failed with status {status}\n");
        self.answer(needle, status, &output);
    }

    /// Every command containing `needle` prints `output` and exits with `status`.
    pub fn answer(&self, needle: &str, status: i32, output: &str) {
        self.lock()
            .scripted
            .insert(needle.to_owned(), (status, output.to_owned()));
    }

    /// The server at `host` presents `key` from now on (as a rebuilt or impostor server
    /// would).
    pub fn set_host_key(&self, host: IpAddr, key: &str) {
        self.lock().host_keys.insert(host, key.to_owned());
    }

    /// The host key the server at `host` presents.
    pub fn host_key(&self, host: IpAddr) -> String {
        Self::key_of(&self.lock(), host)
    }

    /// A pinned target whose host now has another key is refused, as SSH refuses it.
    fn check_pin(state: &FakeState, target: &Target) -> Result<(), RemoteError> {
        let presented = Self::key_of(state, target.host);
        match &target.host_key {
            Some(expected) if *expected != presented => Err(RemoteError::HostKey {
                target: target.to_string(),
                expected: expected.clone(),
                presented,
            }),
            _ => Ok(()),
        }
    }

    fn key_of(state: &FakeState, host: IpAddr) -> String {
        state.host_keys.get(&host).cloned().unwrap_or_else(|| {
            let hex: String = host
                .to_string()
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("ssh-ed25519 FAKEKEY{hex}")
        })
    }

    /// The next `n` connection attempts find nothing listening (a server still booting).
    pub fn refuse_next(&self, n: usize) {
        self.lock().refusals = n;
    }

    /// Nothing answers at `host` from now on (a node that died).
    pub fn unplug(&self, host: IpAddr) {
        self.lock().unplugged.push(host);
    }

    /// Logins as `user` are refused.
    pub fn refuse_user(&self, user: &str) {
        self.lock().refused_users.push(user.to_owned());
    }

    /// Everything done so far, in order.
    pub fn log(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// The commands run on `host`, in order.
    pub fn commands_on(&self, host: IpAddr) -> Vec<String> {
        self.lock()
            .log
            .iter()
            .filter_map(|r| match r {
                Recorded::Run { target, command } if target.host == host => Some(command.clone()),
                _ => None,
            })
            .collect()
    }

    fn connect(state: &mut FakeState, target: &Target) -> Result<(), RemoteError> {
        if state.unplugged.contains(&target.host) {
            return Err(RemoteError::Unreachable {
                target: target.to_string(),
                message: "no route to host".into(),
            });
        }
        if state.refusals > 0 {
            state.refusals -= 1;
            return Err(RemoteError::Unreachable {
                target: target.to_string(),
                message: "connection refused".into(),
            });
        }
        Self::check_pin(state, target)?;
        if state.refused_users.contains(&target.user) {
            return Err(RemoteError::Auth {
                target: target.to_string(),
                message: "permission denied (publickey)".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Remote for FakeRemote {
    async fn run(&self, target: &Target, command: &str) -> Result<Output, RemoteError> {
        let mut state = self.lock();
        Self::connect(&mut state, target)?;
        state.log.push(Recorded::Run {
            target: target.clone(),
            command: command.to_owned(),
        });
        let (status, output) = state
            .scripted
            .iter()
            .find(|(needle, _)| command.contains(needle.as_str()))
            .map_or_else(|| (0, String::new()), |(_, answer)| answer.clone());
        let host_key = Some(Self::key_of(&state, target.host));
        Ok(Output {
            status,
            output,
            host_key,
        })
    }

    async fn upload(
        &self,
        target: &Target,
        path: &str,
        contents: &[u8],
        _mode: u32,
    ) -> Result<(), RemoteError> {
        let mut state = self.lock();
        Self::connect(&mut state, target)?;
        state.log.push(Recorded::Upload {
            target: target.clone(),
            path: path.to_owned(),
            bytes: contents.len(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[tokio::test]
    async fn a_pinned_target_is_refused_once_its_host_has_another_key() {
        let remote = FakeRemote::new();
        let host = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mut target = Target {
            host,
            port: 22,
            user: "ci".into(),
            key: "id_ed25519".into(),
            host_key: None,
        };
        let first = remote.run(&target, "true").await.unwrap().host_key;
        target.host_key = first;
        assert!(remote.run(&target, "true").await.is_ok());
        remote.set_host_key(host, "ssh-ed25519 ANOTHER");
        let error = remote.run(&target, "./ready.sh").await.unwrap_err();
        assert!(matches!(error, RemoteError::HostKey { .. }), "{error:?}");
        assert!(
            !remote.commands_on(host).contains(&"./ready.sh".to_owned()),
            "nothing ran"
        );
    }
}
