//! Tidy tests: every source file explains itself, crates carry the metadata embedders need,
//! and the dependency rules of docs/ARCHITECTURE.md hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::workspace_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        if root.join(dir).is_dir() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    assert!(files.len() > 10, "found only {} files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` module doc: {missing:#?}"
    );
}

/// `cargo metadata` for the workspace, resolved for the host platform, read once.
fn metadata() -> &'static serde_json::Value {
    static METADATA: OnceLock<serde_json::Value> = OnceLock::new();
    METADATA.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let host = Command::new("rustc").arg("-vV").output().unwrap();
        let host = String::from_utf8(host.stdout).unwrap();
        let host = host
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .unwrap()
            .to_owned();
        let output = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--filter-platform",
                &host,
            ])
            .current_dir(workspace_root())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    })
}

/// Every package a workspace crate depends on, directly or not (normal dependencies only).
fn closure(meta: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let edges: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), deps)
        })
        .collect();
    let mut result = BTreeMap::new();
    for member in meta["workspace_members"].as_array().unwrap() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![member.as_str().unwrap()];
        while let Some(id) = stack.pop() {
            for dep in edges.get(id).into_iter().flatten() {
                if seen.insert(name_of[dep].to_owned()) {
                    stack.push(dep);
                }
            }
        }
        result.insert(name_of[member.as_str().unwrap()].to_owned(), seen);
    }
    result
}

/// The dependencies each workspace crate names in its manifest.
fn direct_dependencies(meta: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap()))
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn dependency_layering() {
    let deps = closure(metadata());
    // Crates that must stay free of I/O frameworks, SQL, HTTP and cloud SDKs.
    let pure = [
        "nodepool-model",
        "nodepool-config",
        "nodepool-image",
        "nodepool-node",
    ];
    let forbidden_in_pure = [
        "tokio",
        "diesel",
        "reqwest",
        "hyper",
        "axum",
        "openstack",
        "osauth",
        "russh",
        "tracing",
        "serde_yaml",
        // No randomness and no logging: a plan is a function of its inputs. (The wall clock
        // is kept out by clippy.toml's disallowed methods: chrono's clock feature is unified
        // into every crate's build by the workspace, so a dependency check cannot see it.)
        "getrandom",
        "rand",
        "log",
        "nodepool-db",
        "nodepool-provider",
        "nodepool-openstack",
        "nodepool-daemon",
    ];
    let mut violations = Vec::new();
    for krate in pure {
        for bad in forbidden_in_pure {
            if deps.get(krate).is_some_and(|d| d.contains(bad)) {
                violations.push(format!("{krate} depends on {bad}"));
            }
        }
    }
    // The model knows no YAML and no cloud; the policies know no config file format.
    for bad in ["serde-saphyr", "croner"] {
        if deps.get("nodepool-model").is_some_and(|d| d.contains(bad)) {
            violations.push(format!("nodepool-model depends on {bad}"));
        }
    }
    // Only the store knows SQL.
    for (krate, direct) in direct_dependencies(metadata()) {
        for sql in ["diesel", "diesel_migrations", "libsqlite3-sys"] {
            if krate != "nodepool-db" && direct.contains(sql) {
                violations.push(format!("{krate} depends on {sql}; only nodepool-db may"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
    // The check sees through to indirect dependencies.
    assert!(deps["nodepool-config"].contains("serde-saphyr"));
    assert!(deps["nodepool-cli"].contains("nodepool-model"));
}

#[test]
fn library_crates_carry_package_metadata() {
    let meta = metadata();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mut problems = Vec::new();
    for package in meta["packages"].as_array().unwrap() {
        if !members.contains(package["id"].as_str().unwrap()) {
            continue;
        }
        let is_lib = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "lib"));
        if !is_lib {
            continue;
        }
        let name = package["name"].as_str().unwrap();
        for field in ["description", "license", "repository", "readme"] {
            if package[field].is_null() {
                problems.push(format!("{name} has no `{field}`"));
            }
        }
        if package["license"] != "Apache-2.0" {
            problems.push(format!("{name} is not Apache-2.0"));
        }
        let lib_rs = Path::new(package["manifest_path"].as_str().unwrap())
            .parent()
            .unwrap()
            .join("src/lib.rs");
        let text = std::fs::read_to_string(&lib_rs).unwrap();
        if text.lines().take_while(|l| l.starts_with("//!")).count() < 3 {
            problems.push(format!(
                "{} has fewer than three lines of crate docs",
                lib_rs.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The admin command acts at once through the executors' crate and never links the
/// daemon's loop or its HTTP server.
#[test]
fn the_cli_never_depends_on_the_daemon() {
    let deps = closure(metadata());
    for bad in ["nodepool-daemon", "axum"] {
        assert!(
            !deps["nodepool-cli"].contains(bad),
            "nodepool-cli depends on {bad}"
        );
    }
    assert!(deps["nodepool-cli"].contains("nodepool-executor"));
}

/// Every route the API serves is in its OpenAPI document, with the same methods, and the
/// document describes no route the API lacks. (Schemathesis, `cargo xtask api`, checks the
/// answers against the document.)
#[test]
fn the_openapi_document_lists_every_route_of_the_api() {
    let root = workspace_root();
    let source =
        std::fs::read_to_string(root.join("crates/nodepool-daemon/src/api/mod.rs")).unwrap();
    let mut served: BTreeSet<(String, String)> = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        let rest = &source[at + ".route(".len()..];
        let path = rest.split('"').nth(1).unwrap().to_owned();
        // Up to the next route, or the end of the router.
        let end = [".route(", ".route_layer(", ".fallback("]
            .iter()
            .filter_map(|next| rest.find(next))
            .min()
            .unwrap_or(rest.len());
        let call = &rest[..end];
        for method in ["get", "post", "delete", "put", "patch"] {
            if call.contains(&format!("{method}(routes::")) {
                served.insert((path.clone(), method.to_owned()));
            }
        }
    }
    let document = std::fs::read_to_string(root.join("docs/api/openapi.yaml")).unwrap();
    let mut documented = BTreeSet::new();
    let mut path = None;
    for line in document.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if !line.starts_with("  ") {
            path = None;
        } else if let (Some(path), Some(method)) = (&path, line.strip_prefix("    ")) {
            let method = method.trim_end_matches(':');
            if ["get", "post", "delete", "put", "patch"].contains(&method) {
                documented.insert((path.clone(), method.to_owned()));
            }
        }
    }
    assert!(served.len() >= 10, "the check sees the routes: {served:?}");
    assert_eq!(
        served, documented,
        "served (left) and documented (right) differ"
    );
}

/// Reason codes are a persisted interface spelled once, by the model's `ReasonCode`: no
/// other source file writes one as a string, compares one with a string or keeps a list of
/// its own. (The config's YAML keys and OpenStack's JSON share a few words with codes; those
/// crates never handle reasons.)
#[test]
fn reason_codes_are_spelled_only_by_the_model() {
    let root = workspace_root();
    let model = root.join("crates/nodepool-model/src/codes.rs");
    let text = std::fs::read_to_string(&model).unwrap();
    let codes: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" => \"")?;
            Some(format!("\"{}", rest.strip_suffix(',')?))
        })
        .collect();
    assert!(
        codes.len() > 40,
        "found only {} codes in {}",
        codes.len(),
        model.display()
    );
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let mut found = Vec::new();
    for file in &files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        if name.starts_with("crates/nodepool-model/")
            || name.starts_with("crates/nodepool-config/")
            || name.starts_with("crates/nodepool-openstack/")
        {
            continue;
        }
        let is_test =
            name.contains("/tests/") || name.ends_with("tests.rs") || name.contains("/benches/");
        let source = std::fs::read_to_string(file).unwrap();
        for (n, line) in source.lines().enumerate() {
            let code_part = line.split("//").next().unwrap_or_default();
            let by_hand = [
                "pub mod codes",
                "Reason::new(\"",
                "code == \"",
                "code != \"",
                ".code.as_ref()",
            ];
            let mut bad: Vec<&str> = by_hand
                .iter()
                .copied()
                .filter(|p| code_part.contains(p))
                .collect();
            if !is_test {
                bad.extend(
                    codes
                        .iter()
                        .map(String::as_str)
                        .filter(|c| code_part.contains(c)),
                );
                if code_part.contains("ReasonCode::parse(")
                    && !name.ends_with("nodepool-db/src/rows.rs")
                {
                    bad.push("ReasonCode::parse (only for codes read back from the store)");
                }
            }
            if !bad.is_empty() {
                found.push(format!(
                    "{name}:{}: {} in {:?}",
                    n + 1,
                    bad.join(", "),
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "reason codes spelled outside nodepool_model::ReasonCode (use its variants):\n{}",
        found.join("\n")
    );
}
