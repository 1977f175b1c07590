//! Checks of what the config refers to outside the file.

use std::fs;

use crate::{Concern, Environment, Severity};

#[test]
fn missing_scripts_keys_and_clouds_are_reported_at_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("scripts")).unwrap();
    fs::write(root.join("scripts/prepare.sh"), "#!/bin/sh\n").unwrap();
    fs::write(root.join("id_rsa"), "key").unwrap();
    fs::write(
        root.join("clouds.yaml"),
        "clouds:\n  east:\n    auth:\n      password: hunter2\n  west: {}\n",
    )
    .unwrap();
    let text = "\
script-dir: scripts
labels:
  - name: a
    image: ubuntu
    ready-script: missing-ready.sh
    providers: [east, south]
providers:
  - name: east
    cloud: east
    max-servers: 1
    images:
      - name: ubuntu
        base-image: U
        min-ram: 1
        setup: prepare.sh
        private-key: id_rsa
  - name: south
    cloud: south
    max-servers: 1
    images:
      - name: ubuntu
        base-image: U
        min-ram: 1
        setup: missing-setup.sh
        private-key: no-such-key
";
    let path = root.join("nodepool.yaml");
    fs::write(&path, text).unwrap();
    let loaded = crate::load(&path).unwrap();
    let env = Environment {
        clouds_yaml: Some(root.join("clouds.yaml")),
        home: None,
        current_dir: None,
    };
    let issues = loaded.check_environment(&env);
    let shown: Vec<String> = issues
        .iter()
        .map(|i| {
            let d = &i.diagnostic;
            assert_eq!(d.severity, Severity::Warning);
            let at = d.location.map(|l| l.to_string()).unwrap_or_default();
            format!(
                "{at} {} {:?}: {}",
                d.key,
                i.concern,
                d.message.replace(&root.display().to_string(), "ROOT")
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            "5:19 labels[0].ready-script Label(\"a\"): ROOT/scripts/missing-ready.sh is not a file on this machine",
            "16:22 providers[0].images[0].private-key Nothing: ROOT/id_rsa may be read by other users of this machine: make it readable by its owner only (chmod 600)",
            "18:12 providers[1].cloud Provider(\"south\"): no cloud named \"south\" in ROOT/clouds.yaml (it has: east, west)",
            "24:16 providers[1].images[0].setup Provider(\"south\"): ROOT/scripts/missing-setup.sh is not a file on this machine",
            "25:22 providers[1].images[0].private-key Provider(\"south\"): cannot read ROOT/no-such-key: No such file or directory (os error 2)",
        ]
    );
    assert!(!shown.concat().contains("hunter2"));
}

#[test]
fn token_files_must_hold_a_token_and_be_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write = |name: &str, text: &str, mode: u32| {
        fs::write(root.join(name), text).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(mode)).unwrap();
    };
    write("admin.token", "s3cret-admin\n", 0o600);
    write("zuul.token", "s3cret-zuul\n", 0o640);
    write("empty.token", "\n", 0o600);
    let text = "\
labels: []
providers: []
api:
  token-file: admin.token
  tokens:
    - name: zuul
      token-file: zuul.token
    - name: other
      token-file: empty.token
    - name: gone
      token-file: missing.token
";
    let path = root.join("nodepool.yaml");
    fs::write(&path, text).unwrap();
    let loaded = crate::load(&path).unwrap();
    let shown: Vec<String> = loaded
        .check_environment(&Environment::default())
        .iter()
        .map(|i| {
            format!(
                "{} {:?}: {}",
                i.diagnostic.key,
                i.concern,
                i.diagnostic
                    .message
                    .replace(&root.display().to_string(), "ROOT")
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            "api.tokens[0].token-file Nothing: ROOT/zuul.token may be read by other users of this machine: make it readable by its owner only (chmod 600)",
            "api.tokens[1].token-file All: ROOT/empty.token is empty: put the API's bearer token in it",
            "api.tokens[2].token-file All: ROOT/missing.token cannot be read on this machine: No such file or directory (os error 2)",
        ]
    );
    assert!(!shown.concat().contains("s3cret"));
}

#[test]
fn clouds_yaml_search_path() {
    let env = Environment {
        clouds_yaml: None,
        home: Some("/home/np".into()),
        current_dir: Some("/srv".into()),
    };
    let paths: Vec<String> = env
        .clouds_yaml_candidates()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/srv/clouds.yaml",
            "/home/np/.config/openstack/clouds.yaml",
            "/etc/openstack/clouds.yaml"
        ]
    );
    let env = Environment {
        clouds_yaml: Some("/x/c.yaml".into()),
        ..env
    };
    assert_eq!(
        env.clouds_yaml_candidates(),
        [std::path::PathBuf::from("/x/c.yaml")]
    );
}

#[test]
fn no_clouds_yaml_and_no_script_dir() {
    let text = "script-dir: /no/such/dir\nlabels: []\nproviders:\n  - name: p\n    cloud: c\n    max-servers: 1\n    images: []\n";
    let loaded = crate::parse(text, "nodepool.yaml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = Environment {
        clouds_yaml: Some(dir.path().join("clouds.yaml")),
        home: None,
        current_dir: None,
    };
    let issues = loaded.check_environment(&env);
    assert_eq!(issues.len(), 2);
    assert_eq!(issues[0].concern, Concern::All);
    assert_eq!(
        issues[0].diagnostic.to_string(),
        "nodepool.yaml:1:13: warning: script-dir: /no/such/dir is not a folder on this machine"
    );
    assert!(
        issues[1]
            .diagnostic
            .message
            .starts_with("no clouds.yaml found (looked in "),
        "{}",
        issues[1].diagnostic
    );
}
