//! Policy benchmarks: `cargo xtask bench policy` (or `cargo bench -p nodepool-node --bench
//! policy`).
//!
//! One planning round of the node policy and of the image policy for a large site: 50
//! providers, 500 labels, 1,000 image uploads, and 1,000 / 10,000 / 100,000 nodes with a
//! fifth as many waiting requests, every node's server in the last two listings. Prints
//! medians as a Markdown table for docs/benchmarks.md.

// A benchmark measures wall time; nothing else in the workspace may read the clock.
#![allow(clippy::disallowed_methods, clippy::print_stdout)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use nodepool_config::Config;
use nodepool_model::{
    ExternalId, Flavor, Image, ImageId, ImageState, Node, NodeId, NodeRequest, NodeState,
    RequestId, RequestState, Snapshot, Timestamp,
};
use nodepool_node::{CloudView, Listing, SeenOwner, SeenServer, World};

const PROVIDERS: usize = 50;
const LABELS: usize = 500;
const IMAGES_PER_PROVIDER: usize = 10;
const SAMPLES: usize = 21;

fn now() -> Timestamp {
    Timestamp::from_unix_seconds(1_400_000_000)
}

fn ago(seconds: u64) -> Timestamp {
    now().saturating_sub(Duration::from_secs(seconds))
}

/// The providers label `l` may use.
fn providers_of(l: usize) -> [usize; 3] {
    [l % PROVIDERS, (l + 17) % PROVIDERS, (l + 31) % PROVIDERS]
}

fn config(nodes: usize) -> Config {
    let max_servers = nodes / PROVIDERS * 6 / 5 + 10;
    let mut text = String::from("labels:\n");
    for l in 0..LABELS {
        let providers: Vec<String> = providers_of(l)
            .iter()
            .map(|p| format!("{{name: p{p}}}"))
            .collect();
        let _ = writeln!(
            text,
            "  - {{name: l{l}, image: i{}, min-ready: 2, providers: [{}]}}",
            l % IMAGES_PER_PROVIDER,
            providers.join(", ")
        );
    }
    text.push_str("providers:\n");
    for p in 0..PROVIDERS {
        let _ = writeln!(
            text,
            "  - name: p{p}\n    driver: fake\n    max-servers: {max_servers}\n    availability-zones: [az1, az2, az3]\n    images:"
        );
        for i in 0..IMAGES_PER_PROVIDER {
            let _ = writeln!(
                text,
                "      - {{name: i{i}, base-image: Ubuntu 22.04, min-ram: 2048}}"
            );
        }
    }
    nodepool_config::parse(&text, "bench.yaml")
        .unwrap_or_else(|e| panic!("bench config: {e:?}"))
        .config
}

fn snapshot(nodes: usize) -> (Snapshot, World) {
    let mut images = Vec::new();
    for p in 0..PROVIDERS {
        for i in 0..IMAGES_PER_PROVIDER {
            for version in 0..2u64 {
                let id = images.len() as u64 + 1;
                images.push(Image {
                    id: ImageId::new(id),
                    provider: format!("p{p}").parse().unwrap(),
                    name: format!("i{i}").parse().unwrap(),
                    version: ago(90_000 - version * 3_600),
                    hostname: None,
                    external_id: Some(ExternalId::new(format!("img-{id}"))),
                    server_external_id: None,
                    state: ImageState::Ready,
                    state_time: ago(80_000 - version * 3_600),
                });
            }
        }
    }
    let mut world = World::default();
    let mut listings: Vec<Vec<SeenServer>> = vec![Vec::new(); PROVIDERS];
    let states = [
        NodeState::Ready,
        NodeState::Ready,
        NodeState::Ready,
        NodeState::InUse,
        NodeState::Building,
        NodeState::Ready,
        NodeState::InUse,
        NodeState::Used,
        NodeState::Ready,
        NodeState::Delete,
    ];
    let all: Vec<Node> = (0..nodes)
        .map(|n| {
            let label = n % LABELS;
            let provider = providers_of(label)[n % 3];
            let id = NodeId::new(n as u64 + 1);
            let state = states[n % states.len()];
            if state == NodeState::Building {
                world.busy.insert(id);
            }
            let server = ExternalId::new(format!("srv-{n}"));
            listings[provider].push(SeenServer {
                id: server.clone(),
                owner: SeenOwner::Node(id, format!("p{provider}").parse().unwrap()),
                busy: false,
            });
            Node {
                id,
                provider: format!("p{provider}").parse().unwrap(),
                label: format!("l{label}").parse().unwrap(),
                az: Some(format!("az{}", n % 3 + 1)),
                hostname: None,
                external_id: Some(server),
                public_ip: None,
                private_ip: None,
                state,
                state_time: ago(600 + (n % 3_000) as u64),
                image: None,
                request: None,
                hold: None,
                created: ago(3_600),
                host_keys: Vec::new(),
            }
        })
        .collect();
    // Eight flavors, as a public cloud lists them; the images take the 2 GB one.
    let flavors: std::sync::Arc<[Flavor]> = (0..8u64)
        .map(|k| Flavor {
            id: format!("flavor-{k}"),
            name: format!("m1.size{k}"),
            ram_mb: 512 << k,
            vcpus: 1 << (k / 2),
        })
        .collect();
    for (p, servers) in listings.into_iter().enumerate() {
        world.clouds.insert(
            format!("p{p}").parse().unwrap(),
            CloudView {
                listing: Some(std::sync::Arc::new(Listing::new(ago(5), servers.clone()))),
                previous: Some(std::sync::Arc::new(Listing::new(ago(15), servers))),
                flavors: Some(flavors.clone()),
                ..CloudView::default()
            },
        );
    }
    let requests = (0..nodes / 5)
        .map(|r| NodeRequest {
            id: RequestId::new(r as u64 + 1),
            labels: (0..1 + r % 3)
                .map(|k| format!("l{}", (r * 7 + k) % LABELS).parse().unwrap())
                .collect(),
            requestor: format!("ci-{}", r % 4),
            priority: (r % 2) as i32,
            state: RequestState::Requested,
            state_time: ago(60),
            nodes: Vec::new(),
            failure: None,
            created: ago(60 + r as u64),
        })
        .collect();
    let snapshot = Snapshot {
        nodes: all,
        images,
        requests,
        ..Snapshot::default()
    };
    (snapshot, world)
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[SAMPLES / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1_000.0)
}

fn main() {
    println!("| nodes | requests | node plan (median) | image plan (median) | actions |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    // NODEPOOL_BENCH_NODES=10000 runs one size (for profiling).
    let sizes: Vec<usize> = match std::env::var("NODEPOOL_BENCH_NODES") {
        Ok(n) => vec![n.parse().expect("NODEPOOL_BENCH_NODES is a number")],
        Err(_) => vec![1_000, 10_000, 100_000],
    };
    for nodes in sizes {
        let config = config(nodes);
        let (snapshot, world) = snapshot(nodes);
        let plan = nodepool_node::plan(&snapshot, &config, now(), &world);
        // Every provider connected, with the flavors the node plan sees.
        let images_world = nodepool_image::World {
            clouds: world
                .clouds
                .iter()
                .map(|(name, view)| (name.clone(), view.flavors.clone()))
                .collect(),
            ..nodepool_image::World::default()
        };
        let node_time = median(|| {
            black_box(nodepool_node::plan(
                black_box(&snapshot),
                &config,
                now(),
                &world,
            ));
        });
        let image_time = median(|| {
            black_box(nodepool_image::plan(
                black_box(&snapshot),
                &config,
                now(),
                &images_world,
            ));
        });
        println!(
            "| {nodes} | {} | {} | {} | {} |",
            snapshot.requests.len(),
            ms(node_time),
            ms(image_time),
            plan.actions.len()
        );
    }
}
