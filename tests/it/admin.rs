//! The admin commands on a store an operator would find: `list`, `image-list`, `hold`,
//! `delete`, `show`, `request-list`, their `--json` and their errors. Outputs are compared
//! whole (insta snapshots); times the store holds are written relative to now, so that ages
//! come out the same on every run, and absolute times are masked.

use std::path::{Path, PathBuf};
use std::process::Command;

use nodepool_config::DbUri;
use nodepool_daemon::SystemClock;
use nodepool_db::{NewImage, NewNode, Store};
use nodepool_model::{ExternalId, HoldNote, ImageState, NodeState, Reason, ReasonCode, Timestamp};
use nodepool_provider::Clock;
use serde_json::Value;

use crate::nodepool_with;

/// 2014-05-13T05:00:00Z: image versions are fixed, so the Version column is too.
const VERSION: Timestamp = Timestamp::from_unix_seconds(1_399_957_200);

struct Pool {
    dir: tempfile::TempDir,
}

impl Pool {
    fn config(&self) -> PathBuf {
        self.dir.path().join("nodepool.yaml")
    }

    /// This pool's config with cloud2 an OpenStack whose Keystone cannot be reached
    /// (password `s3cret`, which must never be printed).
    fn with_unreachable_cloud2(&self) -> PathBuf {
        let path = self.dir.path().join("unreachable-cloud.yaml");
        let text = std::fs::read_to_string(self.config()).unwrap().replace(
            "  - name: cloud2\n    driver: fake\n",
            "  - name: cloud2\n    auth-url: http://127.0.0.1:1/v3\n    username: nodepool\n    password: s3cret\n    project-name: ci\n",
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `nodepool -c <this pool's config> args` as user alice.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        nodepool_with(&self.config(), args)
    }
}

fn config_text(db: &str) -> String {
    format!(
        "dburi: {db}
labels:
  - name: small
    image: base
    min-ready: 1
    providers: [{{name: cloud1}}, {{name: cloud2}}]
  - name: large
    image: base
    min-ready: 0
    providers: [{{name: cloud1}}]
providers:
  - name: cloud1
    driver: fake
    max-servers: 4
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
  - name: cloud2
    driver: fake
    max-servers: 4
    images:
      - {{name: base, base-image: Ubuntu 22.04, min-ram: 2048}}
"
    )
}

/// A pool as nodepoold leaves it: two uploads, nodes in several states, a request.
fn pool() -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nodepool.sqlite");
    std::fs::write(
        dir.path().join("nodepool.yaml"),
        config_text(&format!("sqlite://{}", db.display())),
    )
    .unwrap();
    // Whole minutes before now: ages print the same whatever the second.
    let now = SystemClock.now();
    let ago = |minutes: i64| Timestamp::from_unix_seconds(now.unix_seconds() - minutes * 60);
    let store = Store::open_and_migrate(&DbUri::Sqlite(db), "nodepoold", ago(600)).unwrap();
    let why = |code: &'static str, text: &str| Reason::new(ReasonCode::parse(code), text);

    let upload = store
        .create_image(
            &NewImage::new("cloud1".parse().unwrap(), "base".parse().unwrap(), VERSION),
            ago(240),
            &why(
                "missing",
                "image base on provider cloud1 has no READY or BUILDING upload",
            ),
        )
        .unwrap();
    store
        .attach_image_template(
            upload.id,
            &ExternalId::new("tmpl-1"),
            "base-1399957200.template.openstack.org",
            ago(235),
        )
        .unwrap();
    store
        .attach_image_snapshot(upload.id, &ExternalId::new("snap-1"), ago(190))
        .unwrap();
    store
        .set_image_state(
            upload.id,
            ImageState::Ready,
            ago(180),
            &why("built", "snapshot active"),
        )
        .unwrap();
    store
        .create_image(
            &NewImage::new("cloud2".parse().unwrap(), "base".parse().unwrap(), VERSION),
            ago(12),
            &why(
                "missing",
                "image base on provider cloud2 has no READY or BUILDING upload",
            ),
        )
        .unwrap();

    let launch = |provider: &str, label: &str, minutes: i64| {
        let new = NewNode::new(provider.parse().unwrap(), label.parse().unwrap())
            .image(upload.id)
            .hostname(format!(
                "{label}-{provider}-{{node_id}}.slave.openstack.org"
            ));
        store
            .create_node(&new, ago(minutes), &why("min-ready", "label needs 1 more"))
            .unwrap()
    };
    // Rows are created in an order the listing does not follow: it sorts by provider,
    // label, id.
    let ready = launch("cloud2", "small", 100);
    store
        .attach_node_server(ready.id, &ExternalId::new("srv-a"), ago(99))
        .unwrap();
    store
        .set_node_addresses(
            ready.id,
            Some("203.0.113.7".parse().unwrap()),
            Some("10.0.0.7".parse().unwrap()),
            ago(95),
        )
        .unwrap();
    store
        .set_node_state(
            ready.id,
            NodeState::Ready,
            ago(90),
            &why("launched", "reachable over SSH"),
        )
        .unwrap();
    let held = launch("cloud1", "small", 2000);
    store
        .attach_node_server(held.id, &ExternalId::new("srv-b"), ago(1999))
        .unwrap();
    store
        .set_node_addresses(held.id, None, Some("10.0.0.8".parse().unwrap()), ago(1995))
        .unwrap();
    store
        .set_node_state(
            held.id,
            NodeState::Ready,
            ago(1990),
            &why("launched", "reachable over SSH"),
        )
        .unwrap();
    store
        .hold_node(
            held.id,
            &HoldNote {
                reason: "debugging a flaky test".into(),
                by: "bob".into(),
            },
            ago(1800),
            nodepool_db::Acting::Anyone,
        )
        .unwrap();
    let _building = launch("cloud1", "large", 6);
    store
        .create_request(&["small".parse().unwrap()], "zuul", 0, ago(3))
        .unwrap();
    Pool { dir }
}

/// Masks absolute times (as the tables print them, to the second) and the test's folder.
fn masked(pool: &Pool, text: &str) -> String {
    let text = text.replace(&pool.dir.path().display().to_string(), "[dir]");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    // 2026-11-25T21:54:21Z becomes YYYY-MM-DDThh:mm:ssZ, so that tables keep their shape.
    while let Some(at) = rest.find('T') {
        let (before, from) = rest.split_at(at);
        let is_time = before.len() >= 10
            && before.is_char_boundary(before.len() - 10)
            && from.len() >= 10
            && from.as_bytes()[9] == b'Z'
            && before[before.len() - 10..]
                .bytes()
                .enumerate()
                .all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
        if is_time {
            out.push_str(&before[..before.len() - 10]);
            out.push_str("YYYY-MM-DDThh:mm:ssZ");
            rest = &from[10..];
        } else {
            out.push_str(before);
            out.push('T');
            rest = &from[1..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn list_shows_the_2014_columns_in_the_2014_order() {
    let pool = pool();
    let (code, stdout, stderr) = pool.run(&["list"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    insta::assert_snapshot!("list", stdout);
    let (code, stdout, _) = pool.run(&["list", "--provider", "cloud1", "--state", "hold"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("list_filtered", stdout);
}

#[test]
fn image_and_request_listings() {
    let pool = pool();
    let (code, stdout, stderr) = pool.run(&["image-list"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    insta::assert_snapshot!("image_list", stdout);
    let (code, stdout, _) = pool.run(&["request-list"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("request_list", stdout);
}

#[test]
fn hold_and_delete_print_the_row_and_show_tells_the_story() {
    let pool = pool();
    let (code, stdout, stderr) = pool.run(&["hold", "1", "--reason", "keeping it for a look"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    insta::assert_snapshot!("hold", stdout);
    let (code, stdout, _) = pool.run(&["delete", "3"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("delete", stdout);
    // Again: nothing to do, the same row.
    let (code, again, _) = pool.run(&["delete", "3"]);
    assert_eq!((code, again), (0, stdout));
    let (code, stdout, _) = pool.run(&["show", "node", "1"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("show_node", masked(&pool, &stdout));
    let (code, stdout, _) = pool.run(&["show", "image", "1"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("show_image", masked(&pool, &stdout));
}

/// The `--json` field names are an interface: scripts read them.
#[test]
fn json_parses_back_with_stable_field_names() {
    let pool = pool();
    let keys =
        |value: &Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
    let (code, stdout, _) = pool.run(&["--json", "list"]);
    assert_eq!(code, 0);
    let nodes: Value = serde_json::from_str(&stdout).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        keys(&nodes[0]),
        [
            "age_hours",
            "az",
            "created",
            "held_by",
            "hold_reason",
            "host_keys",
            "hostname",
            "id",
            "image_id",
            "label",
            "nodename",
            "private_ip",
            "provider",
            "public_ip",
            "request_id",
            "server_id",
            "state",
            "state_time"
        ]
    );
    let ready = nodes.iter().find(|n| n["state"] == "ready").unwrap();
    assert_eq!(ready["public_ip"], "203.0.113.7");
    assert_eq!(ready["age_hours"], 1.5);
    assert_eq!(ready["nodename"], "small-cloud2-1");
    let held = nodes.iter().find(|n| n["state"] == "hold").unwrap();
    assert_eq!(
        (held["held_by"].as_str(), held["age_hours"].as_f64()),
        (Some("bob"), Some(30.0))
    );

    let (_, stdout, _) = pool.run(&["--json", "image-list"]);
    let images: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        keys(&images[0]),
        [
            "age_hours",
            "hostname",
            "id",
            "image",
            "image_id",
            "provider",
            "server_id",
            "state",
            "state_time",
            "version"
        ]
    );
    assert_eq!(images[0]["version"], 1_399_957_200);

    let (_, stdout, _) = pool.run(&["--json", "request-list"]);
    let requests: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        keys(&requests[0]),
        [
            "age_hours",
            "created",
            "failure",
            "id",
            "labels",
            "nodes",
            "priority",
            "requestor",
            "state",
            "state_time"
        ]
    );

    let (_, stdout, _) = pool.run(&["--json", "show", "node", "2"]);
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(keys(&shown), ["events", "node"]);
    assert_eq!(
        keys(&shown["events"][0]),
        ["actor", "code", "reason", "seq", "time", "what"]
    );
    let whats: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(whats.first(), Some(&"created"));
    assert_eq!(whats.last(), Some(&"state hold"));

    // A hold from the command line is recorded with who did it.
    let (code, stdout, _) = pool.run(&["--json", "hold", "1"]);
    assert_eq!(code, 0);
    let held: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(held[0]["held_by"], "alice");
    assert_eq!(held[0]["hold_reason"], "held from the command line");
}

#[test]
fn errors_are_one_line_naming_the_thing_with_the_right_exit_code() {
    let pool = pool();
    // An id the store does not have: operational, 1.
    let (code, stdout, stderr) = pool.run(&["hold", "99"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (1, "", "nodepool: node 99 not found\n")
    );
    let (code, _, stderr) = pool.run(&["show", "image", "42"]);
    assert_eq!(
        (code, stderr.as_str()),
        (1, "nodepool: image 42 not found\n")
    );
    // A node being deleted cannot be held.
    pool.run(&["delete", "2"]);
    let (code, _, stderr) = pool.run(&["hold", "2"]);
    assert_eq!(
        (code, stderr.as_str()),
        (1, "nodepool: node 2 is delete; it cannot become hold\n")
    );
    // Bad arguments: usage, 2.
    let (code, _, stderr) = pool.run(&["hold", "one"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid value 'one' for '<ID>'"),
        "{stderr}"
    );
    let (code, _, stderr) = pool.run(&["list", "--state", "sleeping"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("invalid value 'sleeping' for '--state <STATE>'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("building, ready, in-use, used, delete, hold, test"),
        "{stderr}"
    );

    // A broken config: usage, 2, naming the file and the first error.
    let broken = pool.dir.path().join("broken.yaml");
    std::fs::write(&broken, "labels: []\nproviders: []\nbogus: 1\n").unwrap();
    let (code, _, stderr) = nodepool_with(&broken, &["list"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("nodepool: {}:", broken.display())),
        "{stderr}"
    );
    let missing = pool.dir.path().join("missing.yaml");
    let (code, _, stderr) = nodepool_with(&missing, &["list"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read the config file"), "{stderr}");

    // A store nobody set up, and one that cannot be reached: operational, 1.
    let fresh = pool.dir.path().join("fresh.yaml");
    std::fs::write(
        &fresh,
        config_text(&format!(
            "sqlite://{}/fresh.sqlite",
            pool.dir.path().display()
        )),
    )
    .unwrap();
    let (code, _, stderr) = nodepool_with(&fresh, &["list"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("is not set up yet: start nodepoold"),
        "{stderr}"
    );
    let unreachable = pool.dir.path().join("unreachable.yaml");
    std::fs::write(
        &unreachable,
        config_text("postgresql://nodepool:s3cret@127.0.0.1:1/nodepool"),
    )
    .unwrap();
    let (code, _, stderr) = nodepool_with(&unreachable, &["list"]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("nodepool: cannot open the store postgres://nodepool:***@127.0.0.1:1/nodepool: connection to server at \"127.0.0.1\", port 1 failed: Connection refused"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("s3cret"),
        "the password is never printed: {stderr}"
    );
}

#[test]
fn an_empty_pool_prints_the_header_only() {
    let pool = pool();
    let (code, stdout, _) = pool.run(&["list", "--label", "nowhere"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "+----+----------+----+-------+--------+----------+----------+-----------+----+-------+-------------+\n\
         | ID | Provider | AZ | Label | Target | Hostname | NodeName | Server ID | IP | State | Age (hours) |\n\
         +----+----------+----+-------+--------+----------+----------+-----------+----+-------+-------------+\n\
         +----+----------+----+-------+--------+----------+----------+-----------+----+-------+-------------+\n"
    );
}

/// On the fake cloud the admin command connects its own, empty cloud: the servers and
/// images of the store are gone there already, which the deletions take as done.
#[test]
fn delete_now_and_image_delete_remove_the_rows_and_keep_the_story() {
    let pool = pool();
    let (code, stdout, stderr) = pool.run(&["delete", "--now", "1"]);
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "node 1 deleted: server srv-a is gone\n", "")
    );
    let (_, stdout, _) = pool.run(&["--json", "list"]);
    let nodes: Value = serde_json::from_str(&stdout).unwrap();
    assert!(nodes.as_array().unwrap().iter().all(|n| n["id"] != 1));
    // The row is gone; its story is not.
    let (code, stdout, _) = pool.run(&["show", "node", "1"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("show_gone_node", masked(&pool, &stdout));

    // The only READY upload of an image two labels launch from on cloud1: refused.
    let (code, stdout, stderr) = pool.run(&["image-delete", "1"]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(
        stderr,
        "nodepool: image upload 1 is the only READY upload of image base on provider cloud1, and labels small, large launch from it; deleting it stops their launches there until a rebuild (`nodepool image-update cloud1 base`); --force deletes it anyway\n"
    );
    // A building upload is no one's last.
    let (code, stdout, _) = pool.run(&["image-delete", "2"]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "image upload 2 deleted (base on provider cloud2)\n")
    );
    let (code, _, _) = pool.run(&["image-delete", "--force", "1"]);
    assert_eq!(code, 0);
    let (_, stdout, _) = pool.run(&["--json", "image-list"]);
    assert_eq!(stdout, "[]\n");
    let (code, _, stderr) = pool.run(&["image-delete", "1"]);
    assert_eq!(
        (code, stderr.as_str()),
        (1, "nodepool: image 1 not found\n")
    );
}

#[test]
fn alien_listings_on_the_fake_cloud() {
    let pool = pool();
    // The fake's base images are public, not snapshots: nothing alien.
    let (code, stdout, stderr) = pool.run(&["alien-image-list"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(stdout.lines().count(), 4, "header only: {stdout}");
    let (code, stdout, _) = pool.run(&["--json", "alien-list", "cloud2"]);
    assert_eq!((code, stdout.as_str()), (0, "[]\n"));
    let (code, _, stderr) = pool.run(&["alien-list", "cloud9"]);
    assert_eq!(
        (code, stderr.as_str()),
        (
            2,
            "nodepool: no provider cloud9 in the config (it has: cloud1, cloud2)\n"
        )
    );
}

/// docs/nodepool.1 is what `nodepool man` renders now: `cargo xtask docs` regenerates it.
#[test]
fn the_man_page_in_docs_is_current() {
    let output = Command::new(env!("CARGO_BIN_EXE_nodepool"))
        .arg("man")
        .output()
        .unwrap();
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(page.contains(".TH nodepool 1"), "{page}");
    assert!(page.contains("image\\-update"), "every command is in it");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/nodepool.1");
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == page,
        "docs/nodepool.1 is stale: run `cargo xtask docs`"
    );
}

#[test]
fn completions_name_every_command() {
    let pool = pool();
    let (code, stdout, _) = pool.run(&["completion", "bash"]);
    assert_eq!(code, 0);
    for command in ["list", "image-update", "alien-image-list", "show"] {
        assert!(stdout.contains(command), "{command} is completed");
    }
    let (code, _, stderr) = pool.run(&["completion", "tcsh"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
}

/// A provider that cannot be reached: `delete --now` fails with one line, and the node is
/// left marked for deletion for nodepoold to finish; nothing is half done.
#[test]
fn a_failed_delete_now_leaves_the_node_marked_for_the_daemon() {
    let pool = pool();
    let unreachable = pool.with_unreachable_cloud2();
    let (code, stdout, stderr) = nodepool_with(&unreachable, &["delete", "--now", "1"]);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("nodepool: provider cloud2: cannot connect: "),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("; it stays marked for deletion and nodepoold finishes it\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let (_, stdout, _) = pool.run(&["--json", "list", "--state", "delete"]);
    let nodes: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(nodes[0]["id"], 1);
}

/// A provider that cannot be reached: the others' aliens are listed, the failure is named,
/// exit 1.
#[test]
fn alien_list_names_a_provider_it_cannot_ask() {
    let pool = pool();
    let unreachable = pool.with_unreachable_cloud2();
    let (code, stdout, stderr) = nodepool_with(&unreachable, &["--json", "alien-list"]);
    assert_eq!((code, stdout.as_str()), (1, "[]\n"));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("nodepool: provider cloud2: cannot connect: "),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// `daemon-list`: each daemon sharing the store, whether its lease holds, and what it has
/// claimed; as a table and as JSON.
#[test]
fn daemon_list_shows_each_daemons_lease_and_work() {
    use nodepool_db::DaemonRecord;
    use nodepool_model::{ImageId, NodeId, Subject};
    let pool = pool();
    let store = Store::open(
        &DbUri::Sqlite(pool.dir.path().join("nodepool.sqlite")),
        "test",
    )
    .unwrap();
    let now = SystemClock.now();
    let ago = |minutes: i64| Timestamp::from_unix_seconds(now.unix_seconds() - minutes * 60);
    let live = DaemonRecord::new("np1.example.org", 4242, ago(90)).unwrap();
    let dead = DaemonRecord::new("np2.example.org", 777, ago(300)).unwrap();
    store
        .renew_lease(
            &live,
            &store.installation_id().unwrap(),
            ago(0),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    store
        .renew_lease(
            &dead,
            &store.installation_id().unwrap(),
            ago(120),
            std::time::Duration::from_secs(30),
        )
        .unwrap();
    for subject in [
        Subject::Node(NodeId::new(1)),
        Subject::Image(ImageId::new(1)),
    ] {
        assert!(store.claim_work(subject, &live.id, ago(1)).unwrap());
    }

    let (code, stdout, stderr) = pool.run(&["daemon-list"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let row = |id: &str| -> Vec<String> {
        let line = lines.iter().find(|l| l.contains(id)).unwrap();
        line.split('|')
            .map(|cell| cell.trim().to_owned())
            .filter(|cell| !cell.is_empty())
            .collect()
    };
    let stamp = |at: Timestamp| at.to_datetime().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(
        row(&dead.id),
        [
            dead.id.clone(),
            "np2.example.org".into(),
            "777".into(),
            stamp(ago(300)),
            "5.00".into(),
            format!(
                "expired {}",
                stamp(Timestamp::from_unix_seconds(ago(120).unix_seconds() + 30))
            ),
            "0".into(),
        ]
    );
    assert_eq!(
        row(&live.id),
        [
            live.id.clone(),
            "np1.example.org".into(),
            "4242".into(),
            stamp(ago(90)),
            "1.50".into(),
            "alive".into(),
            "2".into(),
        ]
    );
    // Oldest first.
    assert!(stdout.find(&dead.id) < stdout.find(&live.id), "{stdout}");

    let (code, stdout, _) = pool.run(&["--json", "daemon-list"]);
    assert_eq!(code, 0);
    let daemons: Value = serde_json::from_str(&stdout).unwrap();
    let daemons = daemons.as_array().unwrap();
    assert_eq!(daemons.len(), 2);
    assert_eq!(
        daemons[1],
        serde_json::json!({
            "id": live.id,
            "host": "np1.example.org",
            "pid": 4242,
            "started": ago(90).to_string(),
            "up_hours": 1.5,
            "lease_expires": Timestamp::from_unix_seconds(now.unix_seconds() + 3600).to_string(),
            "alive": true,
            "work": 2,
        })
    );
    assert_eq!(
        (&daemons[0]["alive"], &daemons[0]["work"]),
        (&Value::Bool(false), &serde_json::json!(0))
    );
}

/// `installation-id`: the store's id; `--new` gives a copy of the store its own, refused
/// while a daemon runs on it.
#[test]
fn installation_id_is_shown_and_a_copy_gets_its_own() {
    use nodepool_db::DaemonRecord;
    let pool = pool();
    let store = Store::open(
        &DbUri::Sqlite(pool.dir.path().join("nodepool.sqlite")),
        "test",
    )
    .unwrap();
    let before = store.installation_id().unwrap();
    let (code, stdout, stderr) = pool.run(&["installation-id"]);
    assert_eq!((code, stdout.trim()), (0, before.as_str()), "{stderr}");

    let now = SystemClock.now();
    let live = DaemonRecord::new("np1.example.org", 4242, now).unwrap();
    store
        .renew_lease(&live, &before, now, std::time::Duration::from_secs(3600))
        .unwrap();
    let (code, _, stderr) = pool.run(&["installation-id", "--new"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("1 nodepoold running on this store"),
        "{stderr}"
    );
    assert_eq!(store.installation_id().unwrap(), before);

    store.retire_daemon(&live.id, now).unwrap();
    let (code, stdout, stderr) = pool.run(&["--json", "installation-id", "--new"]);
    assert_eq!(code, 0, "{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    let after = store.installation_id().unwrap();
    assert_ne!(after, before);
    assert_eq!(answer["installation"], after.as_str());
    assert_eq!(answer["previous"], before.as_str());
}
