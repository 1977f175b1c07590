//! Faults at the daemon's level, on real time, with a leak ledger: a fake cloud that loses
//! a create's answer and fails a floating IP's create with a 5xx, a store that fails one
//! call, then is unreachable for 30 s while launches and a build are in flight. The daemon
//! stays up, `/health` goes 503 and back, the cloud never holds more node servers than
//! `max-servers`, and soon after the store is back every tagged server, image and floating
//! IP belongs to a row, and every row's resource is there.

// Skipping says so on stderr, as the other suites do.
#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodepool_config::DbUri;
use nodepool_daemon::{Connector, Daemon, FakeRemote, Options, Remote, SystemClock};
use nodepool_db::Store;
use nodepool_model::{NodeState, Snapshot};
use nodepool_provider::{
    Clock, ErrorKind, FakeConfig, FakeProvider, Fault, INSTALLATION_KEY, NODE_KEY, Provider,
    ProviderError, op,
};

const MAX_SERVERS: usize = 3;

/// One fake cloud for the provider, kept across reconnections, with the faults injected.
#[derive(Debug)]
struct Cloud {
    fake: Arc<FakeProvider>,
    remote: Arc<FakeRemote>,
}

#[async_trait::async_trait]
impl Connector for Cloud {
    async fn connect(
        &self,
        _provider: &nodepool_config::Provider,
    ) -> Result<(Arc<dyn Provider>, Arc<dyn Remote>), ProviderError> {
        Ok((self.fake.clone(), self.remote.clone()))
    }
}

/// `GET /health` on `address`: the status code.
fn health(address: std::net::SocketAddr) -> u16 {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ =
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: nodepool\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// What does not match between the cloud and the store, if anything.
async fn ledger(cloud: &FakeProvider, store: &Store) -> Result<(), String> {
    // The cloud first: what is made after the store is read is not yet in it.
    let servers = cloud.list_servers().await.unwrap();
    let images = cloud.list_images().await.unwrap();
    let ips = cloud.list_floating_ips().await.unwrap();
    let snapshot = snapshot(store).await.map_err(|e| format!("store: {e}"))?;
    let tagged = |m: &BTreeMap<String, String>| m.contains_key(INSTALLATION_KEY);
    for server in servers.iter().filter(|s| tagged(&s.metadata)) {
        let node = snapshot
            .nodes
            .iter()
            .any(|n| n.external_id.as_ref() == Some(&server.id));
        let template = snapshot
            .images
            .iter()
            .any(|i| i.server_external_id.as_ref() == Some(&server.id));
        if !node && !template {
            return Err(format!(
                "server {} ({}) belongs to no row",
                server.id, server.name
            ));
        }
    }
    for image in images.iter().filter(|i| tagged(&i.properties)) {
        if !snapshot
            .images
            .iter()
            .any(|i| i.external_id.as_ref() == Some(&image.id))
        {
            return Err(format!("image {} belongs to no upload", image.id));
        }
    }
    for ip in &ips {
        let tags = &ip.metadata;
        if !tagged(tags) {
            continue;
        }
        let node = tags.get(NODE_KEY).and_then(|id| id.parse::<u64>().ok());
        if !snapshot.nodes.iter().any(|n| Some(n.id.get()) == node) {
            return Err(format!("floating IP {} belongs to no node", ip.id));
        }
    }
    for node in &snapshot.nodes {
        if let Some(id) = &node.external_id
            && node.state == NodeState::Ready
            && !servers.iter().any(|s| &s.id == id)
        {
            return Err(format!(
                "node {}'s server {id} is not in the cloud",
                node.id
            ));
        }
    }
    Ok(())
}

async fn snapshot(store: &Store) -> Result<Snapshot, nodepool_db::StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.snapshot())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_rides_out_cloud_faults_and_a_store_outage_and_leaks_nothing() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let Some(db) = support::ServerDb::postgres("faults") else {
        return;
    };
    let relay = support::Relay::to("127.0.0.1:5432".parse().unwrap());
    let dburi = db.uri().replace(":5432/", &format!(":{}/", relay.port));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nodepool.yaml"),
        format!(
            "dburi: {dburi}
api:
  listen: 127.0.0.1:0
labels:
  - name: small
    image: base
    min-ready: {MAX_SERVERS}
    providers: [{{name: east}}]
providers:
  - name: east
    driver: fake
    max-servers: {MAX_SERVERS}
    pool: public
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
"
        ),
    )
    .unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut fake = FakeConfig::default();
    fake.boot_time = Duration::from_secs(3);
    fake.snapshot_time = Duration::from_secs(5);
    fake.snapshot_task_tail = Duration::from_secs(1);
    let cloud = Arc::new(FakeProvider::new(
        "east".parse().unwrap(),
        clock.clone(),
        fake,
    ));
    // Of the launches (the first server and floating IP are the build's template's): the
    // third server create is made but its answer lost, the second floating IP's create
    // fails with a 5xx.
    cloud.inject(Fault::LostCreate { nth: 3 });
    cloud.inject(Fault::Fail {
        operation: op::CREATE_FLOATING_IP,
        nth: 2,
        kind: ErrorKind::Transient,
    });
    let connector = Arc::new(Cloud {
        fake: cloud.clone(),
        remote: Arc::new(FakeRemote::new()),
    });
    let mut options = Options::new(dir.path().join("nodepool.yaml"));
    options.tick = Duration::from_secs(2);
    let daemon = Daemon::start(options, clock.clone(), connector)
        .await
        .unwrap();
    let address = daemon.api_address().unwrap();
    let store = Store::open(&DbUri::parse(&db.uri(), None).unwrap(), "test").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(daemon.run(
        async {
            let _ = stopped.await;
        },
        Arc::new(tokio::sync::Notify::new()),
    ));

    // Watches the cloud throughout: never more node servers than max-servers.
    let most = Arc::new(Mutex::new(0_usize));
    let watcher = {
        let (cloud, most) = (cloud.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(servers) = cloud.list_servers().await {
                    let nodes = servers
                        .iter()
                        .filter(|s| s.metadata.contains_key(NODE_KEY))
                        .count();
                    let mut most = most.lock().unwrap();
                    *most = (*most).max(nodes);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let wait = |what: &'static str, limit: Duration| {
        let end = clock.now().saturating_add(limit);
        let clock = clock.clone();
        move |done: bool| {
            assert!(clock.now() < end, "{what}: not within {limit:?}");
            done
        }
    };

    // The build is under way: one store call fails (the relay cut for a moment).
    let building = wait("the build", Duration::from_secs(60));
    while !building(snapshot(&store).await.is_ok_and(|s| !s.images.is_empty())) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.mend();
    // Launches and a build in flight, the store gone for 30 s.
    let launching = wait("launches", Duration::from_secs(120));
    while !launching(
        snapshot(&store)
            .await
            .is_ok_and(|s| s.nodes.iter().any(|n| n.state == NodeState::Building)),
    ) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.cut();
    let unready = wait("/health 503 during the outage", Duration::from_secs(30));
    while !unready(
        tokio::task::spawn_blocking(move || health(address))
            .await
            .unwrap()
            == 503,
    ) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !running.is_finished(),
        "the daemon stays up through the outage"
    );
    relay.mend();
    let ready = wait(
        "/health 200 once the store is back",
        Duration::from_secs(60),
    );
    while !ready(
        tokio::task::spawn_blocking(move || health(address))
            .await
            .unwrap()
            == 200,
    ) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The pool fills, and the cloud and the store agree (within a few listings).
    let settled = wait("the pool and a clean ledger", Duration::from_secs(180));
    loop {
        let full = snapshot(&store).await.is_ok_and(|s| {
            s.nodes
                .iter()
                .filter(|n| n.state == NodeState::Ready)
                .count()
                == MAX_SERVERS
        });
        let clean = ledger(&cloud, &store).await;
        if settled(full && clean.is_ok()) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    watcher.abort();
    let most = *most.lock().unwrap();
    assert!(
        most <= MAX_SERVERS,
        "{most} node servers at once, max-servers {MAX_SERVERS}"
    );
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
