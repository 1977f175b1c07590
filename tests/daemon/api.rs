//! The HTTP API of the real `nodepoold`, through real HTTP on loopback: every endpoint, the
//! errors a client can cause, the token and the rate limit, and the metrics a known sequence
//! of events leaves.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use nodepool_daemon::SystemClock;
use nodepool_provider::Clock;

use super::{Log, config, deadline, follow_until, nodepoold, past, pause, terminate};

/// A daemon with its API's base URL.
struct Api {
    child: super::Daemon,
    log: Log,
    base: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    token: Option<String>,
}

/// An answer: status, headers we look at, and the body as JSON (or text).
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    location: Option<String>,
    authenticate: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

impl Api {
    /// Starts nodepoold on `config` and reads where its API listens from its log.
    fn start(config: &Path) -> Api {
        let (child, mut log) = nodepoold(config);
        let mut base = String::new();
        follow_until(&mut log, "the API listening", |line| {
            match line.split_once("API listening on ") {
                Some((_, url)) => {
                    base = url.split_whitespace().next().unwrap().to_owned();
                    true
                }
                None => false,
            }
        });
        Api {
            child,
            log,
            base,
            // Below the API's 10 s for an idle connection, as docs/api.md asks of clients.
            client: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            token: None,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        self.runtime.block_on(async {
            let response = request.send().await.expect("the API answers");
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            let (retry_after, location, authenticate) = (
                header("retry-after"),
                header("location"),
                header("www-authenticate"),
            );
            let status = response.status().as_u16();
            Answer {
                status,
                retry_after,
                location,
                authenticate,
                text: response.text().await.unwrap(),
            }
        })
    }

    fn get(&self, path: &str) -> Value {
        let answer = self.call("GET", path, None);
        assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
        answer.json()
    }

    fn post(&self, path: &str, body: Value) -> Answer {
        self.call("POST", path, Some(&body.to_string()))
    }

    /// Waits for `done` to hold of `GET path`, for at most `limit`.
    fn until(&self, path: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let end = deadline(limit);
        loop {
            let value = self.get(path);
            if done(&value) {
                return value;
            }
            assert!(
                !past(end),
                "GET {path}: not as wanted after {limit:?}: {value:#}"
            );
            pause(Duration::from_millis(100));
        }
    }

    fn stop(mut self) {
        terminate(&self.child);
        follow_until(&mut self.log, "the daemon to stop", |line| {
            line.contains("stopped")
        });
        assert!(super::exit_status(&mut self.child, Duration::from_secs(60)).success());
    }
}

fn write_config(dir: &Path, extra_api: &str) -> std::path::PathBuf {
    let text = config(dir).replace(
        "api:\n  listen: 127.0.0.1:0\n",
        &format!("api:\n  listen: 127.0.0.1:0\n{extra_api}"),
    );
    let path = dir.join("nodepool.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The sum of the samples of `name` whose labels include `labels` in Prometheus' `text`.
fn sum_of(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && labels.iter().all(|l| line.contains(l))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn ready_nodes(api: &Api, count: usize) {
    api.until("/v1/nodes?state=ready", Duration::from_secs(60), |nodes| {
        nodes.as_array().unwrap().len() >= count
    });
}

#[test]
fn consumers_take_nodes_give_them_back_and_the_metrics_count_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&write_config(dir.path(), ""));
    ready_nodes(&api, 2);

    // Two nodes, served from the ready ones.
    let created = api.post(
        "/v1/requests",
        json!({"labels": ["small", "small"], "requestor": "zuul", "priority": 5}),
    );
    assert_eq!(created.status, 202, "{created:?}");
    let request = created.json();
    let id = request["id"].as_u64().unwrap();
    assert_eq!(
        created.location.as_deref(),
        Some(&*format!("/v1/requests/{id}"))
    );
    assert_eq!(request["state"], "requested");
    assert_eq!(request["priority"], 5);

    let fulfilled = api.get(&format!("/v1/requests/{id}?wait=30"));
    assert_eq!(fulfilled["state"], "fulfilled", "{fulfilled:#}");
    let nodes = fulfilled["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(fulfilled["node_ids"].as_array().unwrap().len(), 2);
    for node in nodes {
        assert_eq!(node["state"], "in-use");
        assert_eq!(node["request"], id);
        assert_eq!(node["label"], "small");
        assert_eq!(node["username"], "jenkins");
        assert_eq!(node["ssh_port"], 22);
        assert!(
            node["hostname"].as_str().unwrap().contains("small"),
            "{node}"
        );
        assert!(
            node["private_ip"].is_string(),
            "the fake cloud's nodes have private addresses: {node}"
        );
        assert_eq!(node["host_keys"].as_array().unwrap().len(), 1, "{node}");
    }
    let (first, second) = (
        nodes[0]["id"].as_u64().unwrap(),
        nodes[1]["id"].as_u64().unwrap(),
    );
    let in_use = api.get("/v1/nodes?state=in-use&label=small");
    assert_eq!(in_use.as_array().unwrap().len(), 2);
    assert_eq!(api.get(&format!("/v1/nodes/{first}"))["id"], first);

    // One released, one held; releasing twice is refused.
    let released = api.post(&format!("/v1/nodes/{first}/release"), json!(null));
    assert_eq!(
        (released.status, &released.json()["state"]),
        (200, &json!("used"))
    );
    let again = api.call("POST", &format!("/v1/nodes/{first}/release"), None);
    assert_eq!(again.status, 409, "{again:?}");
    assert!(
        again.json()["error"]
            .as_str()
            .unwrap()
            .contains("it cannot become used")
    );
    let held = api.post(
        &format!("/v1/nodes/{second}/hold"),
        json!({"reason": "debugging a failure", "by": "alice"}),
    );
    assert_eq!(held.status, 200, "{held:?}");
    assert_eq!(
        held.json()["hold"],
        json!({"reason": "debugging a failure", "by": "alice"})
    );

    // Canceling a fulfilled request leaves the released and the held node as they are.
    let canceled = api.call("DELETE", &format!("/v1/requests/{id}"), None);
    assert_eq!(
        (canceled.status, &canceled.json()["state"]),
        (200, &json!("canceled"))
    );
    assert_eq!(api.get(&format!("/v1/nodes/{second}"))["state"], "hold");
    let twice = api.call("DELETE", &format!("/v1/requests/{id}"), None);
    assert_eq!(twice.status, 409, "{twice:?}");

    // More than the providers could ever hold at once: it waits; canceled, the nodes it
    // got go back to ready.
    let big = api
        .post(
            "/v1/requests",
            json!({"labels": vec!["small"; 9], "requestor": "ci"}),
        )
        .json();
    let big_id = big["id"].as_u64().unwrap();
    let waiting = api.until(
        &format!("/v1/requests/{big_id}"),
        Duration::from_secs(60),
        |r| r["node_ids"].as_array().unwrap().len() >= 2,
    );
    assert_eq!(waiting["state"], "requested");
    assert!(
        waiting["nodes"].as_array().unwrap().is_empty(),
        "nodes only once fulfilled"
    );
    let given = waiting["node_ids"].clone();
    let canceled = api
        .call("DELETE", &format!("/v1/requests/{big_id}"), None)
        .json();
    assert_eq!(canceled["state"], "canceled");
    for node in given.as_array().unwrap() {
        let node = api.get(&format!("/v1/nodes/{node}"));
        assert!(
            node["state"] == "ready" && node["request"].is_null(),
            "given back: {node:#}"
        );
    }

    // A label nobody supplies fails at once, with the reason.
    let unknown = api
        .post(
            "/v1/requests",
            json!({"labels": ["gpu"], "requestor": "ci"}),
        )
        .json();
    let failed = api.get(&format!("/v1/requests/{}?wait=30", unknown["id"]));
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["failure"], "there is no label gpu in the config");
    let listed = api.get("/v1/requests?state=failed&requestor=ci");
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let images = api.get("/v1/images?state=ready");
    assert_eq!(images.as_array().unwrap().len(), 2, "{images:#}");
    let providers = api.get("/v1/providers");
    let names: Vec<&str> = providers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["east", "west"]);
    assert!(providers[0]["connected"].as_bool().unwrap());
    assert!(providers[0]["last_ok"].is_string(), "{providers:#}");

    let health = api.get("/health");
    assert_eq!(
        (&health["live"], &health["ready"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(health["config"]["error"], Value::Null);
    assert_eq!(health["store"]["ok"], true);

    // The metrics after that sequence. The pool's refills run on after the requests
    // end: their launches are counted once they are done (within a deadline).
    let ready = [r#"outcome="ready""#];
    let end = deadline(Duration::from_secs(60));
    let metrics = loop {
        let metrics = api.call("GET", "/metrics", None);
        assert_eq!(metrics.status, 200);
        if sum_of(&metrics.text, "nodepool_launch_seconds_count", &ready) >= 6.0 {
            break metrics;
        }
        assert!(
            !past(end),
            "fewer than 6 launches in 60 s:\n{}",
            metrics.text
        );
        pause(Duration::from_millis(200));
    };
    // The sum of the samples of `name` whose labels include `labels`.
    let sample = |name: &str, labels: &[&str]| -> f64 {
        let found: Vec<f64> = metrics
            .text
            .lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
                    && labels.iter().all(|l| line.contains(l))
            })
            .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .collect();
        assert!(
            !found.is_empty(),
            "no {name} {labels:?} in:\n{}",
            metrics.text
        );
        found.iter().sum()
    };
    assert_eq!(
        sample("nodepool_requests_total", &[r#"outcome="fulfilled""#]),
        1.0
    );
    assert_eq!(
        sample("nodepool_requests_total", &[r#"outcome="unservable""#]),
        1.0
    );
    assert_eq!(sample("nodepool_request_wait_seconds_count", &[]), 1.0);
    assert_eq!(
        sample("nodepool_nodes", &[r#"state="hold""#, r#"label="small""#]),
        1.0
    );
    assert_eq!(sample("nodepool_images", &[r#"state="ready""#]), 2.0);
    assert_eq!(sample("nodepool_build_seconds_count", &ready), 2.0);
    assert!(
        sample(
            "nodepool_cloud_calls_total",
            &[r#"operation="list_servers""#]
        ) >= 2.0
    );
    assert!(sample("nodepool_round_seconds_count", &[]) >= 1.0);
    api.stop();
}

#[test]
fn bad_input_gets_a_json_4xx_that_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&write_config(dir.path(), ""));
    // (method, path, body, status, part of the error, field named)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: &[Case<'_>] = &[
        (
            "POST",
            "/v1/requests",
            Some("{\"labels\": [\"small\"]"),
            400,
            "invalid JSON body: EOF",
            None,
        ),
        (
            "POST",
            "/v1/requests",
            Some("[]"),
            400,
            "invalid JSON body: expected an object",
            None,
        ),
        (
            "POST",
            "/v1/requests",
            Some(""),
            400,
            "the body is empty",
            None,
        ),
        (
            "POST",
            "/v1/requests",
            Some(r#"{"labels": ["small"], "requestor": "ci", "lables": 1}"#),
            400,
            "unknown field `lables`, expected one of `labels`",
            Some("lables"),
        ),
        (
            "POST",
            "/v1/requests",
            Some(r#"{"labels": ["small"], "requestor": "ci", "priority": "high"}"#),
            400,
            "invalid type: string \"high\", expected i32",
            Some("priority"),
        ),
        (
            "POST",
            "/v1/requests",
            Some(r#"{"labels": ["small"], "requestor": " "}"#),
            400,
            "name who asks",
            Some("requestor"),
        ),
        (
            "POST",
            "/v1/requests",
            Some(r#"{"labels": [], "requestor": "ci"}"#),
            400,
            "give at least one label",
            Some("labels"),
        ),
        (
            "POST",
            "/v1/requests",
            Some(r#"{"labels": ["small", " padded"], "requestor": "ci"}"#),
            400,
            "\" padded\"",
            Some("labels[1]"),
        ),
        (
            "POST",
            "/v1/requests",
            Some(r#"{"labels": ["small"], "requestor": " "}"#),
            400,
            "name who asks",
            Some("requestor"),
        ),
        (
            "GET",
            "/v1/requests/abc",
            None,
            400,
            "\"abc\" is not a request id",
            Some("id"),
        ),
        (
            "GET",
            "/v1/requests/99999",
            None,
            404,
            "request 99999 not found",
            None,
        ),
        (
            "GET",
            "/v1/requests/1?wait=-1",
            None,
            400,
            "give 0 to 60 seconds",
            Some("wait"),
        ),
        (
            "GET",
            "/v1/requests?state=done",
            None,
            400,
            "\"done\"",
            Some("state"),
        ),
        (
            "GET",
            "/v1/requests?colour=red",
            None,
            400,
            "unknown field `colour`",
            None,
        ),
        (
            "GET",
            "/v1/nodes/12345",
            None,
            404,
            "node 12345 not found",
            None,
        ),
        (
            "GET",
            "/v1/nodes?state=sleeping",
            None,
            400,
            "\"sleeping\"",
            Some("state"),
        ),
        (
            "POST",
            "/v1/nodes/12345/release",
            None,
            404,
            "node 12345 not found",
            None,
        ),
        (
            "POST",
            "/v1/nodes/1/hold",
            Some(r#"{"why": "x"}"#),
            400,
            "unknown field `why`",
            Some("why"),
        ),
        (
            "GET",
            "/v1/images?provider=",
            None,
            400,
            "\"\"",
            Some("provider"),
        ),
        ("GET", "/v1/nope", None, 404, "no such endpoint", None),
        (
            "PUT",
            "/v1/requests",
            None,
            405,
            "does not take that method",
            None,
        ),
    ];
    for (method, path, body, status, error, field) in cases {
        let answer = api.call(method, path, *body);
        let context = format!("{method} {path} {body:?}: {answer:?}");
        assert_eq!(answer.status, *status, "{context}");
        let json = answer.json();
        assert!(json["error"].as_str().unwrap().contains(error), "{context}");
        assert_eq!(json["field"].as_str(), *field, "{context}");
    }
    let huge = format!(
        r#"{{"labels": ["small"], "requestor": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let answer = api.call("POST", "/v1/requests", Some(&huge));
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("larger than 64 KiB")
    );
    // Nothing above made a request.
    assert_eq!(api.get("/v1/requests").as_array().unwrap().len(), 0);
    api.stop();
}

#[test]
fn a_token_guards_everything_but_health_and_clients_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "  token-file: {}\n  rate: 5\n",
            dir.path().join("token").display()
        ),
    );
    let mut api = Api::start(&config);
    let refused = api.call("GET", "/v1/nodes", None);
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.authenticate.as_deref(), Some("Bearer"));
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    api.token = Some("s3cret-tokex".into());
    assert_eq!(api.call("GET", "/metrics", None).status, 401);
    api.token = None;
    let health = api.call("GET", "/health", None);
    assert_ne!(health.status, 401, "health needs no token");
    assert_eq!(health.json()["live"], true);
    api.token = Some("s3cret-token".into());
    // A burst of twice the rate, then 429 until the bucket refills.
    let statuses: Vec<u16> = (0..12)
        .map(|_| api.call("GET", "/v1/nodes", None).status)
        .collect();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(limited >= 1, "{statuses:?}");
    assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    let answer = (0..20)
        .map(|_| api.call("GET", "/v1/nodes", None))
        .find(|a| a.status == 429)
        .unwrap();
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("(api.rate)")
    );
    // The log never shows the token.
    let mut api = api;
    terminate(&api.child);
    let log = follow_until(&mut api.log, "the daemon to stop", |l| {
        l.contains("stopped")
    });
    assert!(!log.contains("s3cret"), "{log}");
    assert!(super::exit_status(&mut api.child, Duration::from_secs(60)).success());
}

#[test]
fn an_unreadable_token_file_or_a_taken_address_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-token");
    let config = write_config(
        dir.path(),
        &format!("  token-file: {}\n", missing.display()),
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nodepoold"))
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("api.token-file: cannot read"), "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = config_text_on_port(dir.path(), port);
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nodepoold"))
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (api.listen)")),
        "{stderr}"
    );
}

fn config_text_on_port(dir: &Path, port: u16) -> String {
    config(dir).replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"))
}

/// 200 clients at once, 50 calls each: every request is served exactly once, no node goes
/// to two requests, and every node is accounted for.
#[test]
fn two_hundred_clients_at_once_lose_no_request_and_share_no_node() {
    const CLIENTS: usize = 200;
    const REQUESTS: usize = 2;
    const CALLS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "  rate: 1000000\n");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("min-ready: 2", "min-ready: 40")
        .replace("max-servers: 4", "max-servers: 150\n    rate: 0.001");
    std::fs::write(&path, text).unwrap();
    let api = Api::start(&path);
    ready_nodes(&api, 40);
    let base = api.base.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let served: Vec<(u64, u64)> = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (client, base) = (client.clone(), base.clone());
                tokio::spawn(async move {
                    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
                        let mut request = client.request(method, format!("{base}{path}"));
                        if let Some(body) = body {
                            request = request.body(body.to_string());
                        }
                        async move {
                            let response = request.send().await.expect("the API answers");
                            let status = response.status().as_u16();
                            let text = response.text().await.unwrap_or_default();
                            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            assert!(status < 300, "{status}: {json}");
                            json
                        }
                    };
                    let mut calls = 0;
                    let mut mine = Vec::new();
                    for _ in 0..REQUESTS {
                        let created = call(
                            reqwest::Method::POST,
                            "/v1/requests".into(),
                            Some(
                                json!({"labels": ["small"], "requestor": format!("ci-{}", i % 7)}),
                            ),
                        )
                        .await;
                        calls += 1;
                        let id = created["id"].as_u64().unwrap();
                        let node = loop {
                            let got = call(
                                reqwest::Method::GET,
                                format!("/v1/requests/{id}?wait=30"),
                                None,
                            )
                            .await;
                            calls += 1;
                            match got["state"].as_str().unwrap() {
                                "fulfilled" => break got["nodes"][0]["id"].as_u64().unwrap(),
                                "requested" => {}
                                other => panic!("request {id} {other}: {got}"),
                            }
                        };
                        call(
                            reqwest::Method::POST,
                            format!("/v1/nodes/{node}/release"),
                            None,
                        )
                        .await;
                        calls += 1;
                        mine.push((id, node));
                    }
                    let reads = [
                        "/v1/nodes?state=ready",
                        "/v1/providers",
                        "/health",
                        "/v1/images",
                    ];
                    while calls < CALLS {
                        call(
                            reqwest::Method::GET,
                            reads[calls % reads.len()].into(),
                            None,
                        )
                        .await;
                        calls += 1;
                    }
                    mine
                })
            })
            .collect();
        let mut served = Vec::new();
        for task in tasks {
            served.extend(task.await.unwrap());
        }
        served
    });
    assert_eq!(served.len(), CLIENTS * REQUESTS, "every request served");
    let nodes: std::collections::BTreeSet<u64> = served.iter().map(|(_, n)| *n).collect();
    assert_eq!(nodes.len(), served.len(), "no node went to two requests");
    // The store agrees: every request fulfilled with its one node, none lost or extra.
    let requests = api.get("/v1/requests");
    let requests = requests.as_array().unwrap();
    assert_eq!(requests.len(), served.len());
    for request in requests {
        assert_eq!(request["state"], "fulfilled", "{request}");
        let id = request["id"].as_u64().unwrap();
        let node = served
            .iter()
            .find(|(r, _)| *r == id)
            .expect("a request we made")
            .1;
        assert_eq!(request["node_ids"], json!([node]));
    }
    // Every node is accounted for: released ones are used or already deleted; none is
    // in use by a request nobody holds.
    let in_use = api.get("/v1/nodes?state=in-use");
    assert!(in_use.as_array().unwrap().is_empty(), "{in_use:#}");
    api.stop();
}

/// A config whose API has three tokens: the consumers `zuul` and `other`, and the admin
/// `ops`. Each token is its name with `-token` after it.
fn consumers_config(dir: &Path, extra_api: &str) -> std::path::PathBuf {
    let mut tokens = String::from("  tokens:\n");
    for (name, admin) in [("zuul", false), ("other", false), ("ops", true)] {
        let file = dir.join(format!("{name}.token"));
        std::fs::write(&file, format!("{name}-token\n")).unwrap();
        tokens.push_str(&format!(
            "    - {{name: {name}, token-file: {}, admin: {admin}}}\n",
            file.display()
        ));
    }
    write_config(dir, &format!("{tokens}{extra_api}"))
}

#[test]
fn each_consumer_owns_its_requests_and_nodes_and_an_admin_owns_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = Api::start(&consumers_config(dir.path(), ""));
    api.token = Some("zuul-token".into());
    ready_nodes(&api, 2);

    // zuul asks in another's name with the largest priority: the request is zuul's, its
    // priority clamped.
    let created = api.post(
        "/v1/requests",
        json!({"labels": ["small"], "requestor": "other", "priority": i32::MAX}),
    );
    assert_eq!(created.status, 202, "{created:?}");
    let request = created.json();
    assert_eq!(
        (&request["requestor"], &request["priority"]),
        (&json!("zuul"), &json!(1000))
    );
    let id = request["id"].as_u64().unwrap();
    let fulfilled = api.get(&format!("/v1/requests/{id}?wait=30"));
    assert_eq!(fulfilled["state"], "fulfilled", "{fulfilled:#}");
    let node = fulfilled["nodes"][0]["id"].as_u64().unwrap();

    // Another consumer may read it, and change nothing of it.
    api.token = Some("other-token".into());
    assert_eq!(api.get(&format!("/v1/nodes/{node}"))["state"], "in-use");
    for (method, path) in [
        ("POST", format!("/v1/nodes/{node}/release")),
        ("POST", format!("/v1/nodes/{node}/hold")),
        ("DELETE", format!("/v1/requests/{id}")),
    ] {
        let answer = api.call(method, &path, None);
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("not other's") || error.contains("not given to other"),
            "{answer:?}"
        );
    }
    // Nor a ready node, which is no consumer's.
    let ready = api.get("/v1/nodes?state=ready")[0]["id"].as_u64().unwrap();
    assert_eq!(
        api.call("POST", &format!("/v1/nodes/{ready}/hold"), None)
            .status,
        403
    );
    api.token = Some("zuul-token".into());
    assert_eq!(
        api.call("POST", &format!("/v1/nodes/{ready}/hold"), None)
            .status,
        403
    );

    // The owner holds its node, in its own name whatever `by` says.
    let held = api.post(
        &format!("/v1/nodes/{node}/hold"),
        json!({"reason": "a failure to look at", "by": "mallory"}),
    );
    assert_eq!(held.status, 200, "{held:?}");
    assert_eq!(held.json()["hold"]["by"], "zuul");
    // A node held (or being launched, or used) cannot be held again: 409.
    let again = api.call("POST", &format!("/v1/nodes/{node}/hold"), None);
    assert_eq!(again.status, 409, "{again:?}");
    assert!(
        again.json()["error"]
            .as_str()
            .unwrap()
            .contains("cannot become hold")
    );

    // The admin may do all of it, to anyone's.
    api.token = Some("ops-token".into());
    let held = api.post(
        &format!("/v1/nodes/{ready}/hold"),
        json!({"reason": "kept"}),
    );
    assert_eq!(held.status, 200, "{held:?}");
    assert_eq!(held.json()["hold"]["by"], "ops");
    let canceled = api.call("DELETE", &format!("/v1/requests/{id}"), None);
    assert_eq!(canceled.status, 200, "{canceled:?}");
    let mut api = api;
    terminate(&api.child);
    let log = follow_until(&mut api.log, "the daemon to stop", |l| {
        l.contains("stopped")
    });
    assert!(!log.contains("-token"), "no token is logged: {log}");
}

/// Opens a connection to `to` from `from` (any 127.0.0.0/8 address), sends half of a
/// request's headers and keeps it open.
async fn half_open(from: &str, to: std::net::SocketAddr) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.ok()?;
    stream
        .write_all(b"GET /v1/nodes HTTP/1.1\r\nHost: nodepool\r\n")
        .await
        .ok()?;
    Some(stream)
}

/// Connections the daemon `pid` has open to its SQLite file `db`.
fn store_connections(pid: u32, db: &Path) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target == db)
        .count()
}

#[test]
fn hostile_clients_hold_neither_the_api_nor_the_store_nor_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(&write_config(dir.path(), "  rate: 5\n"));
    let address: std::net::SocketAddr = api.base.trim_start_matches("http://").parse().unwrap();
    let db = dir.path().join("nodepool.sqlite").canonicalize().unwrap();
    let pid = api.child.id();
    // Polled within the rate limit (5 a second, bursts of 10).
    let end = deadline(Duration::from_secs(60));
    let before = loop {
        let health = api.call("GET", "/health", None);
        if health.status == 200 {
            break health.json()["last_round"].clone();
        }
        assert!(!past(end), "not ready in 60 s: {health:?}");
        pause(Duration::from_millis(300));
    };

    // 1,000 half-sent requests from one client: it gets three quarters of the connections
    // at most (of api.max-connections); the others are closed at once.
    let held: Vec<_> = api.runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.extend(half_open("127.0.0.2", address).await);
        }
        held
    });
    assert!(!held.is_empty());

    // Meanwhile, 1,000 calls to /health from 20 other clients within about a second: each
    // gets its burst, then 429; none costs a store connection.
    let flood_clients: Vec<reqwest::Client> = (0..20)
        .map(|i| {
            let from: std::net::IpAddr = format!("127.0.1.{}", i + 1).parse().unwrap();
            reqwest::Client::builder()
                .local_address(from)
                .build()
                .unwrap()
        })
        .collect();
    let (statuses, most_connections) = api.runtime.block_on(async {
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        let mut most = 0;
        for round in 0..50 {
            let mut calls = tokio::task::JoinSet::new();
            for client in &flood_clients {
                let call = client.get(format!("{}/health", api.base)).send();
                calls.spawn(async move { call.await.map(|r| r.status().as_u16()) });
            }
            while let Some(status) = calls.join_next().await {
                *statuses.entry(status.unwrap().unwrap_or(0)).or_default() += 1;
            }
            if round % 5 == 0 {
                most = most.max(store_connections(pid, &db));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (statuses, most)
    });
    assert!(
        statuses.get(&429).copied().unwrap_or(0) > 500,
        "/health is rate-limited: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&0),
        None,
        "every flood call was answered: {statuses:?}"
    );
    assert!(
        most_connections <= nodepool_db::DEFAULT_POOL_SIZE as usize,
        "{most_connections} connections to the store"
    );
    // A well-behaved client is served all along, and the loop keeps going.
    let end = deadline(Duration::from_secs(30));
    loop {
        let health = api.call("GET", "/health", None);
        assert_eq!(health.status, 200, "{health:?}");
        if health.json()["last_round"] != before {
            break;
        }
        assert!(!past(end), "no round in 30 s under the flood");
        pause(Duration::from_millis(300));
    }

    // The half-sent requests are closed by their header deadline (10 s).
    api.runtime.block_on(async {
        use tokio::io::AsyncReadExt;
        for mut stream in held.into_iter().take(20) {
            let mut buffer = [0_u8; 64];
            let read =
                tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buffer)).await;
            assert!(
                matches!(read, Ok(Ok(0) | Err(_))),
                "a half-sent request is closed: {read:?}"
            );
        }
    });

    // A stop does not wait for idle or half-sent clients. Once the pool is full and no
    // work runs, the API's connections, as many as it takes, from many clients, all
    // half-sent.
    let end = deadline(Duration::from_secs(120));
    loop {
        let ready = api.call("GET", "/v1/nodes?state=ready", None);
        if ready.status == 200 && ready.json().as_array().unwrap().len() >= 2 {
            break;
        }
        assert!(!past(end), "the pool is not full in 120 s: {ready:?}");
        pause(Duration::from_millis(300));
    }
    let held: Vec<_> = api.runtime.block_on(async {
        let mut held = Vec::new();
        for i in 0..1000 {
            held.extend(half_open(&format!("127.0.2.{}", i % 40 + 1), address).await);
        }
        held
    });
    let mut api = api;
    let asked = SystemClock.now();
    terminate(&api.child);
    let status = super::exit_status(&mut api.child, Duration::from_secs(35));
    assert!(status.success(), "{status:?}");
    let took = SystemClock.now().saturating_since(asked);
    let log = follow_until(&mut api.log, "the daemon to stop", |l| {
        l.contains("stopped")
    });
    // The stop deadline (30 s by default) plus 5 s at most; with no work running, the
    // API's own 5 s are all it may take (the code before this test waited for every
    // half-sent request, for as long as its client kept it open).
    assert!(
        took < Duration::from_secs(10),
        "the stop took {took:?}: {log}"
    );
    drop(held);
}
