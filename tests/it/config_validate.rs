//! `nodepool config-validate`: exit codes, every error listed, JSON for scripts.

use super::nodepool;

#[test]
fn every_example_is_valid() {
    for example in ["local", "openstack", "postgresql", "nodepool-2014"] {
        let path = format!("config-examples/{example}.yaml");
        let (code, stdout, stderr) = nodepool(&["-c", &path, "config-validate"]);
        assert_eq!(code, 0, "{path}: {stderr}");
        assert!(stdout.starts_with(&format!("{path}: valid (")), "{stdout}");
        assert!(!stderr.contains(": error:"), "{stderr}");
    }
    let (_, stdout, stderr) = nodepool(&["-c", "config-examples/local.yaml", "config-validate"]);
    assert_eq!(stdout, "config-examples/local.yaml: valid (0 warnings)\n");
    assert_eq!(stderr, "");
}

#[test]
fn warnings_go_to_stderr_and_do_not_fail() {
    let (code, stdout, stderr) = nodepool(&[
        "config-validate",
        "-c",
        "config-examples/nodepool-2014.yaml",
    ]);
    assert_eq!(code, 0);
    assert!(stdout.contains("valid ("), "{stdout}");
    assert!(
        stderr.contains(
            "config-examples/nodepool-2014.yaml:14:3: warning: zmq-publishers: has no effect: "
        ),
        "{stderr}"
    );
}

#[test]
fn a_broken_file_lists_all_its_errors_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "labels:\n  - name: a\n    image: ubuntu\n    min-ready: lots\n    providers: [p]\nproviders:\n  - name: p\n    driver: fake\n    max-server: 1\n    images:\n      - name: ubuntu\n        base-image: U\n        min-ram: -1\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let (code, stdout, stderr) = nodepool(&["-c", path, "config-validate"]);
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "{path}:4:16: error: labels[0].min-ready: expected an integer, found \"lots\"\n\
             {path}:9:5: error: providers[0].max-server: unknown key \"max-server\"; did you mean \"max-servers\"?\n\
             {path}:13:18: error: providers[0].images[0].min-ram: -1 is out of range: must be 0 or more megabytes\n\
             {path}: invalid: 3 errors\n"
        )
    );
}

#[test]
fn json_output_for_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(
        &path,
        "labels: []\nproviders: []\ntargets: []\ncron: {check: 'never'}\n",
    )
    .unwrap();
    let (code, stdout, _) = nodepool(&["--json", "-c", path.to_str().unwrap(), "config-validate"]);
    assert_eq!(code, 2);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["valid"], false);
    let error = &report["errors"][0];
    // These field names are a stable interface.
    let mut fields: Vec<&str> = error
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        ["column", "file", "key", "line", "message", "severity"]
    );
    assert_eq!(error["severity"], "error");
    assert_eq!(error["key"], "cron.check");
    assert_eq!(error["line"], 4);
    assert_eq!(error["column"], 15);
    assert_eq!(report["warnings"][0]["key"], "targets");

    let (code, stdout, _) = nodepool(&[
        "config-validate",
        "--json",
        "-c",
        "config-examples/local.yaml",
    ]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report,
        serde_json::json!({"valid": true, "errors": [], "warnings": []})
    );
}

#[test]
fn a_missing_file_is_a_config_error() {
    let (code, _, stderr) = nodepool(&["-c", "/no/such/nodepool.yaml", "config-validate"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "/no/such/nodepool.yaml: error: cannot read the config file: No such file or directory (os error 2)\n\
         /no/such/nodepool.yaml: invalid: 1 error\n"
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let (code, _, stderr) = nodepool(&["no-such-command"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unrecognized subcommand 'no-such-command'"),
        "{stderr}"
    );
    let (code, stdout, _) = nodepool(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("config-validate"), "{stdout}");
    let (code, stdout, _) = nodepool(&["config-validate", "--help"]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("[default: /etc/nodepool/nodepool.yaml]"),
        "{stdout}"
    );
    let (code, stdout, _) = nodepool(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("nodepool {}\n", env!("CARGO_PKG_VERSION")));
}

/// With `-s`, secure.conf's `[database] dburi` replaces the file's, as nodepool 0.3 and 0.4
/// did, and `config-validate` says so (never printing the password).
#[test]
fn secure_conf_supplies_the_dburi() {
    let (code, stdout, stderr) = nodepool(&[
        "-s",
        "tests/configs/secure.conf",
        "-c",
        "tests/configs/transitional-0.4.yaml",
        "config-validate",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": valid ("), "{stdout}");
    assert!(
        stderr.contains(
            "tests/configs/transitional-0.4.yaml:5:8: warning: dburi: is replaced by `[database] dburi` of tests/configs/secure.conf (line 3), as nodepool 0.3 and 0.4 did\n"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("Zp1ndr4v0"), "{stderr}");

    let (code, _, stderr) = nodepool(&[
        "-s",
        "tests/configs/no-such-secure.conf",
        "-c",
        "tests/configs/transitional-0.4.yaml",
        "config-validate",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(
            "tests/configs/no-such-secure.conf: error: cannot read it: No such file or directory"
        ),
        "{stderr}"
    );
}
