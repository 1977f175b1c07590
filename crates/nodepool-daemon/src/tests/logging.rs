//! What the daemon logs, read back from its log.

use super::*;

/// A connector that cannot connect the providers named in `failing`.
#[derive(Debug)]
struct Flaky {
    inner: Connect,
    failing: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[async_trait::async_trait]
impl Connector for Flaky {
    async fn connect(
        &self,
        provider: &nodepool_config::Provider,
    ) -> Result<
        (Arc<dyn nodepool_provider::Provider>, Arc<dyn crate::Remote>),
        nodepool_provider::ProviderError,
    > {
        if self
            .failing
            .lock()
            .unwrap()
            .contains(provider.name.as_str())
        {
            return Err(nodepool_provider::ProviderError::new(
                nodepool_provider::ErrorKind::Transient,
                "connect",
                provider.name.as_str(),
                "connection refused",
            ));
        }
        self.inner.connect(provider).await
    }
}

/// The daemon's log, as a subscriber writes it.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

/// Conditions that last are logged once while they do, and again only once they have ended
/// and returned: an image made by diskimage-builder, an image or label waiting for a flavor,
/// a provider that cannot be connected.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lasting_conditions_are_logged_once_while_they_last() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    // Other tests' subscribers (on other threads) may have left the callsites' interest
    // and the global level hint cached for less than this one wants.
    tracing::callsite::rebuild_interest_cache();

    let dir = tempfile::tempdir().unwrap();
    let text = |dib: bool, big_ram: u64, huge: i32, far: bool| {
        let mut text = format!(
            "script-dir: scripts
removal-grace: 0
dburi: sqlite://{db}
labels:
  - {{name: small, image: base, min-ready: 1, providers: [{{name: cloud1}}]}}
  - {{name: huge, image: big, min-ready: {huge}, providers: [{{name: cloud1}}]}}
",
            db = dir.path().join("nodepool.sqlite").display()
        );
        if dib {
            text.push_str(
                "  - {name: dibbed, image: dib, min-ready: 1, providers: [{name: cloud1}]}\n",
            );
        }
        if far {
            text.push_str(
                "  - {name: far, image: base, min-ready: 1, providers: [{name: cloud3}]}\n",
            );
        }
        text.push_str(&format!(
            "providers:
  - name: cloud1
    driver: fake
    max-servers: 6
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}}
      - {{name: big, base-image: Ubuntu 22.04, min-ram: {big_ram}, setup: prepare.sh, username: ci}}
"
        ));
        if dib {
            text.push_str(
                "      - {name: dib, diskimage: dib-base, min-ram: 2048, username: ci}\n",
            );
        }
        if far {
            text.push_str(
                "  - name: cloud3
    driver: fake
    max-servers: 2
    images:
      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048, setup: prepare.sh, username: ci}
",
            );
        }
        text.push_str("diskimages:\n  - {name: dib-base, elements: [ubuntu-minimal]}\n");
        text
    };
    const TOO_BIG: u64 = 4_000_000;
    let remote = Arc::new(FakeRemote::new());
    let clock = Arc::new(TokioClock::starting_at(T0));
    let flaky = Arc::new(Flaky {
        inner: Connect::new(clock.clone(), remote.clone(), remote.clone()),
        failing: std::sync::Mutex::new(["cloud3".to_owned()].into()),
    });
    let running = start_with(
        dir.path(),
        &text(true, TOO_BIG, 1, true),
        clock,
        flaky.clone(),
        remote,
    )
    .await;
    let counts = |log: &Log| {
        [
            log.count("is made by diskimage-builder"),
            log.count("no flavor with 4000000 MB"),
            log.count("cannot connect"),
        ]
    };
    let edit = |text: String| {
        std::fs::write(dir.path().join("nodepool.yaml"), text).unwrap();
        running.reload.notify_one();
    };

    // Ten minutes with every cause in place: each said once (about 60 rounds and 10
    // connection attempts).
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(counts(&log), [1, 1, 1], "all said once");

    // Each cause ends: no diskimage-builder image, a flavor that fits, cloud3 reachable.
    // (The edit makes the provider's flavors be listed again: until they are, the image
    // waits with another sentence, a condition of its own.)
    flaky.failing.lock().unwrap().clear();
    edit(text(false, 2048, 1, true));
    running
        .until(
            Duration::from_secs(600),
            "cloud3 and the big image in use",
            |s| ready(s, "far") == 1 && ready(s, "huge") == 1,
        )
        .await;
    // cloud3 leaves the config, so that it is connected anew when it comes back.
    edit(text(false, 2048, 1, false));
    running
        .until(Duration::from_secs(600), "cloud3's node gone", |s| {
            ready(s, "far") == 0
        })
        .await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(
        counts(&log),
        [1, 1, 1],
        "nothing said again while the causes are gone"
    );

    // Each cause returns: said once more, and only once over the next ten minutes.
    flaky.failing.lock().unwrap().insert("cloud3".to_owned());
    edit(text(true, TOO_BIG, 2, true));
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(counts(&log), [2, 2, 2], "each said again once it returned");
    running.stop().await;
}
