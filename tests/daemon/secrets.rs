//! A secret canary: one value no other text holds, put everywhere a secret goes (a
//! provider's password, a numeric clouds.yaml password, `?password=` in `dburi`, a password
//! with `?` in it, the API token), and looked for everywhere nodepool writes: the CLI's
//! output, the daemon's log at `trace`, `/health`, `/metrics`, the API's listings and error
//! bodies, and the whole store. It must appear nowhere, through an auth failure at the
//! cloud and a store outage.

use std::path::Path;
use std::time::Duration;

use clap::Parser;

use crate::support;
use crate::{deadline, follow_until, nodepoold_env, past, pause, terminate};

/// Runs `nodepool ARGS` in this process; its exit code and all it wrote.
fn nodepool(args: &[&str]) -> (u8, String) {
    let cli =
        nodepool_cli::Cli::parse_from(std::iter::once("nodepool").chain(args.iter().copied()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = nodepool_cli::run(&cli, &mut out, &mut err);
    out.extend(err);
    (code, String::from_utf8_lossy(&out).into_owned())
}

/// An HTTP call; the status and the body.
fn http(url: &str, token: Option<&str>, method: &str, body: Option<&str>) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request =
            client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        let response = request.send().await.expect("the API answers");
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_secret_canary_appears_nowhere() {
    let Some(db) = support::ServerDb::postgres("secrets") else {
        return;
    };
    let canary = format!("Cnry{}Q", std::process::id());
    let numeric = format!("91{}73", std::process::id());
    let token = format!("tok{canary}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let keystone = support::refusing_keystone();
    let relay = support::Relay::to("127.0.0.1:5432".parse().unwrap());
    let store_uri = db.uri().replace(":5432/", &format!(":{}/", relay.port))
        + &format!("?sslmode=disable&password={canary}");

    write(&root.join("api.token"), &format!("{token}\n"));
    write(
        &root.join("clouds.yaml"),
        &format!(
            "clouds:\n  numeric:\n    auth:\n      auth_url: http://127.0.0.1:{keystone}/v3\n      username: ci\n      password: {numeric}\n      project_name: ci\n      user_domain_name: Default\n      project_domain_name: Default\n"
        ),
    );
    let image = "    images:\n      - {name: base, base-image: Ubuntu 22.04, min-ram: 2048}\n";
    let config = format!(
        "dburi: {store_uri}
api:
  listen: 127.0.0.1:0
  tokens:
    - {{name: zuul, token-file: {token_file}}}
labels:
  - name: small
    image: base
    min-ready: 1
    providers: [{{name: fake}}]
providers:
  - name: fake
    driver: fake
    max-servers: 2
{image}  - name: inline
    auth-url: http://127.0.0.1:{keystone}/v3
    username: ci
    password: {canary}
    project-name: ci
    max-servers: 1
{image}  - name: numeric
    cloud: numeric
    max-servers: 1
{image}",
        token_file = root.join("api.token").display(),
    );
    let path = root.join("nodepool.yaml");
    write(&path, &config);
    let config_arg = path.display().to_string();
    let mut seen = String::new();

    // The CLI: a valid config, a store it cannot reach, a password with `?` in it.
    for args in [
        vec!["-c", &config_arg, "config-validate"],
        vec!["--json", "-c", &config_arg, "config-validate"],
    ] {
        let (code, out) = nodepool(&args);
        assert_eq!(code, 0, "{out}");
        seen.push_str(&out);
    }
    for dburi in [
        format!("postgres://nodepool@127.0.0.1:1/nodepool?password={canary}"),
        format!("postgres://nodepool:{canary}?x@127.0.0.1:1/nodepool"),
        format!("postgres://nodepool:12/{canary}@127.0.0.1:1/nodepool"),
    ] {
        let other = root.join("other.yaml");
        write(&other, &config.replace(&store_uri, &dburi));
        let other = other.display().to_string();
        for args in [
            vec!["--debug", "-c", &other, "list"],
            vec!["-c", &other, "config-validate"],
            vec!["--json", "-c", &other, "config-validate"],
        ] {
            let (code, out) = nodepool(&args);
            assert!(
                code != 0 || args.contains(&"config-validate"),
                "{args:?}: {out}"
            );
            seen.push_str(&out);
        }
    }

    // The daemon, logging everything, through an auth failure at the cloud.
    let clouds = root.join("clouds.yaml").display().to_string();
    let (child, mut log) = nodepoold_env(
        &path,
        &[],
        &[("RUST_LOG", "trace"), ("OS_CLIENT_CONFIG_FILE", &clouds)],
    );
    let mut base = String::new();
    seen.push_str(&follow_until(&mut log, "the API listening", |line| {
        if let Some((_, url)) = line.split_once("API listening on ") {
            base = url.split_whitespace().next().unwrap().to_owned();
        }
        !base.is_empty()
    }));
    let (mut inline, mut numeric_said) = (false, false);
    seen.push_str(&follow_until(&mut log, "both logins refused", |line| {
        inline |= line.contains("provider inline: cannot connect");
        numeric_said |= line.contains("provider numeric: cannot connect");
        inline && numeric_said
    }));
    let get = |path: &str, token: Option<&str>| http(&format!("{base}{path}"), token, "GET", None);
    for (path, token) in [
        ("/health", None),
        ("/metrics", Some(token.as_str())),
        ("/v1/providers", Some(token.as_str())),
        ("/v1/nodes", Some(token.as_str())),
        ("/v1/nodes", None),
        ("/v1/nodes", Some("wrong")),
        ("/v1/nodes/99", Some(token.as_str())),
        ("/v1/nope", Some(token.as_str())),
    ] {
        let (_, body) = get(path, token);
        seen.push_str(&body);
    }
    let (status, body) = get("/v1/providers", Some(&token));
    assert_eq!(status, 200);
    assert!(body.contains("authentication failed"), "{body}");
    let (_, body) = http(
        &format!("{base}/v1/requests"),
        Some(&token),
        "POST",
        Some("{\"labels\": 1}"),
    );
    seen.push_str(&body);

    // A store outage, seen by /health, and its end.
    relay.cut();
    let end = deadline(Duration::from_secs(60));
    loop {
        let (status, body) = get("/health", None);
        seen.push_str(&body);
        if status == 503 && body.contains("\"ok\":false") {
            break;
        }
        assert!(!past(end), "/health did not see the outage: {body}");
        pause(Duration::from_millis(300));
    }
    let (_, body) = get("/v1/nodes", Some(&token));
    seen.push_str(&body);
    relay.mend();
    let end = deadline(Duration::from_secs(60));
    loop {
        let (status, body) = get("/health", None);
        seen.push_str(&body);
        if status == 200 {
            break;
        }
        assert!(!past(end), "/health did not see the store back: {body}");
        pause(Duration::from_millis(300));
    }
    let mut child = child;
    terminate(&child);
    seen.push_str(&follow_until(&mut log, "the daemon to stop", |l| {
        l.contains("stopped")
    }));
    assert!(crate::exit_status(&mut child, Duration::from_secs(60)).success());

    // The whole store, as pg_dump writes it.
    let dump = std::process::Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "--data-only"])
        .arg(db.uri().rsplit('/').next().unwrap())
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{dump:?}");
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("state"), "the dump has the store's rows");
    seen.push_str(&dump);

    for secret in [&canary, &numeric, &token] {
        let found: Vec<&str> = seen
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .collect();
        assert!(
            found.is_empty(),
            "{secret} is shown in:\n{}",
            found.join("\n")
        );
    }
    // The tell-tale of a password cut by a wrong parse.
    assert!(!seen.contains("Cnry"), "part of the canary is shown");
}
