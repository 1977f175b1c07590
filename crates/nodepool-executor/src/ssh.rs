//! SSH to nodes and template servers, in process (russh on ring).
//!
//! Each call opens its own connection: launches and builds run a handful of commands per
//! server, and a fresh connection per step keeps a half-dead session from poisoning the next.
//! Files are written through `cat` on an exec channel, so servers need no SFTP subsystem.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, load_secret_key};
use russh::{ChannelMsg, Disconnect, client};

use crate::remote::{Output, Remote, RemoteError, Target};

/// How long a TCP connection and the SSH handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a quiet session asks the server whether it is there, and how many unanswered
/// asks end it: a setup step may print nothing for long, a dead server is found in a minute.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);
const KEEPALIVES_UNANSWERED: usize = 4;
/// The most of a command's output kept (its end): a script that prints without end costs
/// no more memory than this.
pub(crate) const OUTPUT_KEPT: usize = 64 * 1024;

/// SSH with a private key from the config.
#[derive(Debug, Default)]
pub struct SshRemote {
    /// Keys read so far, by path: a key file is read once.
    keys: Mutex<Vec<(PathBuf, Arc<PrivateKey>)>>,
}

impl SshRemote {
    /// An SSH client.
    pub fn new() -> SshRemote {
        SshRemote::default()
    }

    fn key(&self, path: &Path, target: &Target) -> Result<Arc<PrivateKey>, RemoteError> {
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, key)) = keys.iter().find(|(p, _)| p == path) {
            return Ok(key.clone());
        }
        let key = load_secret_key(path, None).map_err(|e| RemoteError::Auth {
            target: target.to_string(),
            message: format!("cannot read the private key {}: {e}", path.display()),
        })?;
        let key = Arc::new(key);
        keys.push((path.to_path_buf(), key.clone()));
        Ok(key)
    }

    /// Connects and logs in; returns the session and the host key the server presented.
    async fn session(
        &self,
        target: &Target,
    ) -> Result<(client::Handle<HostKeys>, Option<String>), RemoteError> {
        let key = self.key(&target.key, target)?;
        let unreachable = |message: String| RemoteError::Unreachable {
            target: target.to_string(),
            message,
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(KEEPALIVE_EVERY),
            keepalive_max: KEEPALIVES_UNANSWERED,
            ..Default::default()
        });
        let presented = Arc::new(Mutex::new(None));
        let handler = HostKeys {
            presented: presented.clone(),
            expected: target.host_key.clone(),
        };
        let connect = client::connect(config, (target.host, target.port), handler);
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?;
        let mut session = match connected {
            Ok(session) => session,
            Err(e) => {
                let seen = presented
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                return Err(match (seen, &target.host_key) {
                    (Some(seen), Some(expected)) if seen != *expected => RemoteError::HostKey {
                        target: target.to_string(),
                        expected: expected.clone(),
                        presented: seen,
                    },
                    _ => unreachable(e.to_string()),
                });
            }
        };
        let hash = session
            .best_supported_rsa_hash()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .flatten();
        let auth = session
            .authenticate_publickey(&target.user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !auth.success() {
            return Err(RemoteError::Auth {
                target: target.to_string(),
                message: format!("the key {} was not accepted", target.key.display()),
            });
        }
        let host_key = presented
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok((session, host_key))
    }

    /// Runs `command`, feeding it `stdin` if given; returns its status and output.
    async fn exec(
        &self,
        target: &Target,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Output, RemoteError> {
        let (session, host_key) = self.session(target).await?;
        let broken = |e: russh::Error| RemoteError::Unreachable {
            target: target.to_string(),
            message: format!("the session broke: {e}"),
        };
        let mut channel = session.channel_open_session().await.map_err(broken)?;
        channel.exec(true, command).await.map_err(broken)?;
        if let Some(data) = stdin {
            channel.data(data).await.map_err(broken)?;
            channel.eof().await.map_err(broken)?;
        }
        let mut output = Vec::new();
        let mut status = None;
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    keep_tail(&mut output, &data);
                }
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                _ => {}
            }
        }
        let _ = session
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
        let status = status.ok_or_else(|| RemoteError::Unreachable {
            target: target.to_string(),
            message: format!("{command:?} ended without an exit status (killed by a signal?)"),
        })?;
        Ok(Output {
            status: i32::try_from(status).unwrap_or(i32::MAX),
            output: kept(&output),
            host_key,
        })
    }
}

#[async_trait]
impl Remote for SshRemote {
    async fn run(&self, target: &Target, command: &str) -> Result<Output, RemoteError> {
        self.exec(target, command, None).await
    }

    async fn upload(
        &self,
        target: &Target,
        path: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<(), RemoteError> {
        let quoted = quote(path);
        let command = format!("cat > {quoted} && chmod {mode:o} {quoted}");
        let output = self.exec(target, &command, Some(contents)).await?;
        if output.status != 0 {
            return Err(RemoteError::Unreachable {
                target: target.to_string(),
                message: format!(
                    "writing {path} failed with {}: {}",
                    output.status,
                    output.output.trim()
                ),
            });
        }
        Ok(())
    }
}

/// Appends `data` to `output`, keeping its last [`OUTPUT_KEPT`] bytes.
fn keep_tail(output: &mut Vec<u8>, data: &[u8]) {
    output.extend_from_slice(data);
    // Cut when twice over, so that a stream of small writes is not cut at every one.
    if output.len() > 2 * OUTPUT_KEPT {
        let cut = output.len() - OUTPUT_KEPT;
        output.drain(..cut);
    }
}

/// A command's output as kept: its last [`OUTPUT_KEPT`] bytes.
fn kept(output: &[u8]) -> String {
    let start = output.len().saturating_sub(OUTPUT_KEPT);
    String::from_utf8_lossy(&output[start..]).into_owned()
}

/// A word (a path, an argument) quoted for the POSIX shell: whatever it holds, the shell
/// passes it on as one argument and runs nothing of it.
pub(crate) fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The client side of the handshake. The key presented is kept, so that the launch records
/// it on the node and the periodic check can compare it with the recorded one. A target
/// with a pinned key accepts that key only; one without accepts any (a new server, whose
/// key nobody knows yet).
#[derive(Debug)]
struct HostKeys {
    presented: Arc<Mutex<Option<String>>>,
    expected: Option<String>,
}

impl client::Handler for HostKeys {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::ssh_key::PublicKey,
    ) -> Result<bool, Self::Error> {
        let mut line = key.to_openssh().map_err(russh::keys::Error::from)?;
        // The comment is the server's business; the key is what identifies it.
        if let Some(comment) = line.splitn(3, ' ').nth(2).map(str::len) {
            line.truncate(line.len() - comment - 1);
        }
        let accepted = self
            .expected
            .as_ref()
            .is_none_or(|expected| *expected == line);
        *self
            .presented
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(line);
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commands_output_is_kept_to_its_end() {
        let mut output = Vec::new();
        for i in 0..10_000_u32 {
            keep_tail(&mut output, format!("line {i}\n").as_bytes());
            assert!(output.len() <= 2 * OUTPUT_KEPT + 16);
        }
        let kept = kept(&output);
        assert!(kept.len() <= OUTPUT_KEPT);
        assert!(kept.ends_with("line 9999\n"));
        assert!(!kept.contains("line 0\n"));
    }

    #[test]
    fn a_word_is_one_argument_whatever_it_holds() {
        assert_eq!(quote("ready.sh"), "'ready.sh'");
        assert_eq!(quote("a'; rm -rf / #"), r"'a'\''; rm -rf / #'");
    }
}
