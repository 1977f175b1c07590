//! Broken files: every problem is reported with its location, key path and a useful message.

use expect_test::{Expect, expect};

use super::{MINIMAL, errors, render};

#[track_caller]
fn check(text: &str, expect: Expect) {
    expect.assert_eq(&render(text));
}

#[test]
fn wrong_scalar_type() {
    check(
        &MINIMAL.replace("max-servers: 10", "max-servers: lots"),
        expect![[r#"
            nodepool.yaml:9:18: error: providers[0].max-servers: expected an integer, found "lots"
        "#]],
    );
}

#[test]
fn float_where_an_integer_is_wanted() {
    check(
        &MINIMAL.replace("min-ram: 2048", "min-ram: 2048.5"),
        expect![[r#"
        nodepool.yaml:13:18: error: providers[0].images[0].min-ram: expected an integer, found the number 2048.5
    "#]],
    );
}

#[test]
fn mapping_where_a_list_is_wanted() {
    check(
        &MINIMAL.replace(
            "labels:\n  - name: small",
            "labels:\n  name: small\n  x:\n  - name: small",
        ),
        expect![[r#"
            nodepool.yaml:2:3: error: labels: expected a list, found a mapping
        "#]],
    );
}

#[test]
fn list_where_a_string_is_wanted() {
    check(
        &MINIMAL.replace("base-image: Ubuntu 22.04", "base-image: [a, b]"),
        expect![[r#"
        nodepool.yaml:12:21: error: providers[0].images[0].base-image: expected a string, found a list
    "#]],
    );
}

#[test]
fn unknown_keys_with_did_you_mean() {
    let text = MINIMAL
        .replace(
            "providers:\n  - name: cloud1\n    driver",
            "provider:\n  - name: cloud1\n    driver",
        )
        .replace("min-ram: 2048", "min_ram: 2048\n        flavour: big");
    check(
        &text,
        expect![[r#"
            nodepool.yaml:6:1: error: provider: unknown key "provider"; did you mean "providers"?
        "#]],
    );
}

#[test]
fn every_unknown_key_of_every_section() {
    let text = format!("{MINIMAL}cron:\n  update-image: '14 2 * * *'\n  chek: '* * * * *'\n")
        .replace("    min-ready", "    min-redy")
        .replace(
            "    max-servers: 10",
            "    max-server: 10\n    boot_timeout: 30",
        )
        .replace(
            "  - name: small",
            "  - name: small\n    min-ready: 1\n    readyscript: x.sh",
        );
    check(
        &text,
        expect![[r#"
            nodepool.yaml:4:5: error: labels[0].readyscript: unknown key "readyscript"; did you mean "ready-script"?
            nodepool.yaml:11:5: error: providers[0].max-server: unknown key "max-server"; did you mean "max-servers"?
            nodepool.yaml:12:5: error: providers[0].boot_timeout: unknown key "boot_timeout"; did you mean "boot-timeout"?
            nodepool.yaml:18:3: error: cron.update-image: unknown key "update-image"; did you mean "image-update"?
            nodepool.yaml:19:3: error: cron.chek: unknown key "chek"; did you mean "check"?
        "#]],
    );
}

#[test]
fn invisible_characters_in_keys_are_shown() {
    let text = MINIMAL.replace("max-servers", "max-\u{ad}servers");
    check(
        &text,
        expect![[r#"
            nodepool.yaml:9:5: error: providers[0].max-\u{ad}servers: unknown key "max-\u{ad}servers"; did you mean "max-servers"?
        "#]],
    );
}

#[test]
fn duplicate_yaml_keys() {
    check(
        &MINIMAL.replace("max-servers: 10", "max-servers: 10\n    max-servers: 20"),
        expect![[r#"
        nodepool.yaml:10:5: error: providers[0].max-servers: duplicate key "max-servers"; it is first set at line 9, and only that value is used
    "#]],
    );
}

#[test]
fn duplicate_names() {
    let text = format!(
        "{MINIMAL}  - name: cloud1\n    driver: fake\n    max-servers: 1\n    images:\n      - name: x\n        base-image: b\n        min-ram: 1\n      - name: x\n        base-image: b\n        min-ram: 1\n"
    )
    .replace("labels:\n", "labels:\n  - name: small\n    image: ubuntu\n    providers: []\n");
    check(
        &text,
        expect![[r#"
            nodepool.yaml:5:11: error: labels[1].name: duplicate label name "small"; it is first used at line 2
            nodepool.yaml:17:11: error: providers[1].name: duplicate provider name "cloud1"; it is first used at line 10
            nodepool.yaml:24:15: error: providers[1].images[1].name: duplicate image name "x" on this provider; it is first used at line 21
            nodepool.yaml:4:16: warning: labels[0].providers: is empty: this label can never get nodes
        "#]],
    );
}

#[test]
fn dangling_references() {
    let text = MINIMAL.replace(
        "providers:\n      - name: cloud1\n",
        "providers:\n      - name: clowd1\n      - name: cloud1\n      - name: cloud1\n  - name: big\n    image: ubuntoo\n    providers:\n      - name: cloud1\n",
    );
    check(
        &text,
        expect![[r#"
            nodepool.yaml:5:15: error: labels[0].providers[0].name: no provider named "clowd1"; did you mean "cloud1"?
            nodepool.yaml:7:15: error: labels[0].providers[2].name: provider "cloud1" is listed twice
            nodepool.yaml:9:12: warning: labels[1].image: no provider has an image named "ubuntoo", so this label gets no nodes; did you mean "ubuntu"?
        "#]],
    );
}

#[test]
fn label_image_that_its_provider_lacks() {
    let text = format!(
        "{MINIMAL}  - name: cloud2\n    driver: fake\n    max-servers: 1\n    images:\n      - name: centos\n        base-image: c\n        min-ram: 1\n"
    )
    .replace("      - name: cloud1\n", "      - name: cloud1\n      - name: cloud2\n");
    check(
        &text,
        expect![[r#"
            nodepool.yaml:6:15: warning: labels[0].providers[1].name: provider "cloud2" has no image named "ubuntu" (the label's image), so it supplies no nodes of this label
        "#]],
    );
}

#[test]
fn bad_cron_strings() {
    let text = format!(
        "{MINIMAL}cron:\n  image-update: '*/15 * * *'\n  cleanup: '61 * * * *'\n  check: '0 0 30 2 *'\n"
    );
    check(
        &text,
        expect![[r#"
            nodepool.yaml:15:17: error: cron.image-update: "*/15 * * *" has 4 fields; a schedule has 5: minute hour day-of-month month day-of-week
            nodepool.yaml:16:12: error: cron.cleanup: "61 * * * *" is not a valid schedule: minute 61 is out of range 0-59
            nodepool.yaml:17:10: error: cron.check: "0 0 30 2 *" never fires
        "#]],
    );
}

#[test]
fn bad_dburi() {
    check(
        &format!("dburi: oracle://scott:tiger@db/orcl\n{MINIMAL}"),
        expect![[r#"
        nodepool.yaml:1:8: error: dburi: unsupported database "oracle" in "oracle://scott:***@db/orcl"; use sqlite://PATH or postgres://USER@HOST/DATABASE
    "#]],
    );
    check(
        &format!("dburi: nodepool.sqlite\n{MINIMAL}"),
        expect![[r#"
            nodepool.yaml:1:8: error: dburi: not a database URL (no `scheme://`); expected sqlite://PATH or postgres://USER@HOST/DATABASE
        "#]],
    );
    check(
        &format!("dburi: postgres://nodepool:hunter2@/\n{MINIMAL}"),
        expect![[r#"
            nodepool.yaml:1:8: error: dburi: postgres://*** names no database server host
        "#]],
    );
}

#[test]
fn out_of_range_numbers() {
    let text = MINIMAL
        .replace(
            "max-servers: 10",
            "max-servers: -1\n    rate: -0.5\n    boot-timeout: 0\n    launch-timeout: -3",
        )
        .replace(
            "    image: ubuntu\n",
            "    image: ubuntu\n    min-ready: -2\n    subnodes: -1\n",
        )
        .replace("min-ram: 2048", "min-ram: -512");
    check(
        &text,
        expect![[r#"
            nodepool.yaml:4:16: error: labels[0].min-ready: -2 is out of range: must be -1 (disabled) or more
            nodepool.yaml:5:15: error: labels[0].subnodes: -1 is out of range: must be 0 to 1000
            nodepool.yaml:12:11: error: providers[0].rate: -0.5 is out of range: must be 0 or more seconds
            nodepool.yaml:13:19: error: providers[0].boot-timeout: 0 is out of range: must be more than 0 seconds
            nodepool.yaml:14:21: error: providers[0].launch-timeout: -3 is out of range: must be more than 0 seconds
            nodepool.yaml:18:18: error: providers[0].images[0].min-ram: -512 is out of range: must be 0 or more megabytes
            nodepool.yaml:11:18: warning: providers[0].max-servers: -1: this provider takes no new nodes (as nodepool 0.3 read it); write 0 to say so
        "#]],
    );
}

#[test]
fn top_level_that_is_not_a_mapping() {
    check(
        "- labels\n- providers\n",
        expect![[r#"
        nodepool.yaml:1:1: error: expected a mapping, found a list
    "#]],
    );
    check(
        "just a string\n",
        expect![[r#"
        nodepool.yaml:1:1: error: expected a mapping, found "just a string"
    "#]],
    );
}

#[test]
fn empty_files() {
    check(
        "",
        expect![[r#"
        nodepool.yaml:1:1: error: the file is empty; a config needs at least `labels` and `providers`
    "#]],
    );
    check(
        "# only a comment\n",
        expect![[r#"
        nodepool.yaml:1:1: error: the file is empty; a config needs at least `labels` and `providers`
    "#]],
    );
    check(
        "---\n",
        expect![[r#"
        nodepool.yaml:1:1: error: the file is empty; a config needs at least `labels` and `providers`
    "#]],
    );
}

#[test]
fn yaml_syntax_errors() {
    check(
        "labels: [1, 2\n",
        expect![[r#"
            nodepool.yaml:1:9: error: not valid YAML: unclosed bracket '['
        "#]],
    );
    check(
        "labels:\n  - name: a\n bad-indent: 1\n",
        expect![[r#"
            nodepool.yaml:3:2: error: not valid YAML: while parsing a block mapping, did not find expected key
        "#]],
    );
    check(
        "labels:\n\t- name: a\n",
        expect![[r#"
            nodepool.yaml:2:2: error: not valid YAML: tabs disallowed within this context (block indentation)
        "#]],
    );
}

#[test]
fn invalid_utf8() {
    let mut bytes = b"labels:\n  - name: sm".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(b"all\n");
    let errors = crate::parse_bytes(&bytes, "nodepool.yaml").unwrap_err();
    expect!["nodepool.yaml:2:13: error: the file is not valid UTF-8 (byte 20 is 0xff)"]
        .assert_eq(&errors.to_string());
}

#[test]
fn a_ten_megabyte_file() {
    let mut text = String::from(MINIMAL);
    let filler = "# padding padding padding padding padding padding padding padding padding\n";
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(filler);
    }
    check(
        &text,
        expect![[r#"
        nodepool.yaml:1:1: error: the file is 10.0 MiB; a config may be at most 4 MiB (is this the right file?)
    "#]],
    );
}

#[test]
fn empty_and_invalid_names() {
    let text = MINIMAL
        .replace("  - name: small", "  - name: ''")
        .replace("      - name: ubuntu", "      - name: ' ubuntu'");
    check(
        &text,
        expect![[r#"
            nodepool.yaml:2:11: error: labels[0].name: name is empty
            nodepool.yaml:11:15: error: providers[0].images[0].name: name has leading or trailing whitespace
            nodepool.yaml:3:12: warning: labels[0].image: no provider has an image named "ubuntu", so this label gets no nodes; did you mean " ubuntu"?
        "#]],
    );
}

#[test]
fn missing_required_keys() {
    check(
        "labels:\n  - {}\nproviders:\n  - images:\n      - {}\n",
        expect![[r#"
            nodepool.yaml:2:5: error: labels[0].name: missing; every label needs a name
            nodepool.yaml:2:5: error: labels[0].image: missing; give the name of the provider image its nodes boot from
            nodepool.yaml:2:5: error: labels[0].providers: missing; list the providers that may supply this label
            nodepool.yaml:4:5: error: providers[0].name: missing; every provider needs a name
            nodepool.yaml:4:5: error: providers[0].max-servers: missing; a provider needs a server quota (0 launches nothing)
            nodepool.yaml:4:5: error: providers[0]: no credentials: set `cloud` to an entry of clouds.yaml, or all of auth-url, username, password and project-name (missing: auth-url, username, password, project-name)
            nodepool.yaml:5:9: error: providers[0].images[0].name: missing; every image needs a name
            nodepool.yaml:5:9: error: providers[0].images[0].min-ram: missing; give the least RAM in MB a node's flavor must have
            nodepool.yaml:5:9: error: providers[0].images[0].base-image: missing; give the name or id of the cloud image to build from (or `diskimage`, naming a `diskimages` entry)
        "#]],
    );
}

#[test]
fn provider_without_credentials() {
    let text = MINIMAL.replace(
        "    driver: fake\n",
        "    username: nodepool\n    auth-url: https://keystone.example.org/v3\n",
    );
    check(
        &text,
        expect![[r#"
        nodepool.yaml:7:5: error: providers[0]: no credentials: set `cloud` to an entry of clouds.yaml, or all of auth-url, username, password and project-name (missing: password, project-name)
    "#]],
    );
    let text = MINIMAL.replace(
        "    driver: fake\n",
        "    cloud: east\n    project-name: a\n    project-id: b\n",
    );
    check(
        &text,
        expect![[r#"
        nodepool.yaml:10:17: error: providers[0].project-id: give project-name or project-id, not both
    "#]],
    );
    check(
        &MINIMAL.replace("driver: fake", "driver: vmware"),
        expect![[r#"
        nodepool.yaml:8:13: error: providers[0].driver: unknown driver "vmware"; expected openstack or fake
    "#]],
    );
}

#[test]
fn scripts_need_a_script_dir() {
    let text = MINIMAL
        .replace("min-ram: 2048", "min-ram: 2048\n        setup: prepare.sh")
        .replace(
            "    image: ubuntu\n",
            "    image: ubuntu\n    ready-script: ready.sh\n",
        );
    check(
        &text,
        expect![[r#"
            nodepool.yaml:15:16: error: providers[0].images[0].setup: needs `script-dir`: setup scripts are copied from there to the template server
            nodepool.yaml:4:19: warning: labels[0].ready-script: needs `script-dir`, which this file does not set: this label's launches fail until it does (ready scripts are copied from there to every node)
        "#]],
    );
}

#[test]
fn bad_template_hostname_networks_and_meta() {
    let text = MINIMAL
        .replace(
            "max-servers: 10",
            "max-servers: 10\n    template-hostname: '{image}-{timestamp}'\n    networks:\n      - net-id: a\n        name: b\n      - {}",
        )
        .replace("min-ram: 2048", "min-ram: 2048\n        meta:\n          nodepool-node-id: '1'\n          purpose: ci");
    check(
        &text,
        expect![[r#"
            nodepool.yaml:10:24: error: providers[0].template-hostname: unknown field {image}; the fields are {image.name}, {provider.name} and {timestamp}
            nodepool.yaml:12:9: error: providers[0].networks[0]: give only one of net-id, net-label or name
            nodepool.yaml:14:9: error: providers[0].networks[1]: a network needs one of net-id, net-label or name
            nodepool.yaml:20:11: warning: providers[0].images[0].meta.nodepool-node-id: is ignored: keys starting with `nodepool-` are reserved for nodepool's ownership tags
        "#]],
    );
}

#[test]
fn keys_that_are_not_strings() {
    check(
        &MINIMAL.replace(
            "    driver: fake",
            "    driver: fake\n    ? [a, b]\n    : c",
        ),
        expect![[r#"
        nodepool.yaml:9:7: error: providers[0]: a key must be a plain string, not a list or mapping
    "#]],
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let text = MINIMAL
        .replace(
            "    driver: fake\n",
            "    username: u\n    password: hunter2\n    project-name: p\n",
        )
        .replace("max-servers: 10", "max-servers: many");
    let text = format!("dburi: 'postgres://nodepool:hunter2@'\n{text}");
    let failure = errors(&text);
    let all = render(&text);
    assert!(!all.contains("hunter2"), "{all}");
    assert!(!format!("{failure:?}").contains("hunter2"));
    assert_eq!(failure.errors.len(), 3, "{all}");
    let loaded = super::load(&MINIMAL.replace(
        "    driver: fake\n",
        "    auth-url: a\n    username: u\n    password: hunter2\n    project-name: p\n",
    ));
    let text = format!("{:?}", loaded.config);
    assert!(
        !text.contains("hunter2") && text.contains("Secret(<redacted>)"),
        "{text}"
    );
}

#[test]
fn duplicate_and_oversized_meta() {
    let long = "v".repeat(256);
    let text = MINIMAL.replace(
        "min-ram: 2048",
        &format!("min-ram: 2048\n        meta:\n          a: '1'\n          a: '2'\n          b: {long}\n          c: [x]"),
    );
    check(
        &text,
        expect![[r#"
            nodepool.yaml:16:11: error: providers[0].images[0].meta.a: duplicate key "a"; it is first set at line 15, and only that value is used
            nodepool.yaml:18:14: error: providers[0].images[0].meta.c: expected a string, found a list
            nodepool.yaml:17:14: warning: providers[0].images[0].meta.b: is ignored: a metadata value must have at most 255 characters (Nova's limit)
        "#]],
    );
}

#[test]
fn api_beyond_loopback_needs_a_token_and_a_real_address() {
    check(
        &format!("{MINIMAL}api:\n  listen: 0.0.0.0:8005\n"),
        expect![[r#"
            nodepool.yaml:15:11: error: api.listen: 0.0.0.0:8005 is reachable from other hosts: give `api.tokens` (a token file per consumer) or `api.token-file` (one token that may do everything)
        "#]],
    );
    check(
        &format!(
            "{MINIMAL}api:\n  listen: 0.0.0.0:8005\n  max-connections: 4\n  tokens:\n    - name: zuul\n      token-file: z\n    - name: zuul\n      token-file: y\n      admin: maybe\n    - token-file: x\n    - name: ops\n      token: x\n"
        ),
        expect![[r#"
            nodepool.yaml:16:20: error: api.max-connections: 4 is out of range: must be 8 or more
            nodepool.yaml:20:13: error: api.tokens[1].name: "zuul" is the name of another token
            nodepool.yaml:22:14: error: api.tokens[1].admin: expected true or false, found "maybe"
            nodepool.yaml:23:7: error: api.tokens[2].name: missing; name the consumer that uses this token
            nodepool.yaml:24:7: error: api.tokens[3].token-file: missing; give the file holding the consumer's bearer token
            nodepool.yaml:25:7: error: api.tokens[3].token: unknown key "token"; expected one of: name, token-file, admin
        "#]],
    );
    check(
        &format!("{MINIMAL}api:\n  listen: localhost\n  rate: 0\n  request-timeout: -1\n"),
        expect![[r#"
            nodepool.yaml:15:11: error: api.listen: "localhost" is not an address and port: write it as 127.0.0.1:8005 or [::1]:8005
            nodepool.yaml:16:9: error: api.rate: 0 is out of range: must be 1 or more
            nodepool.yaml:17:20: error: api.request-timeout: -1 is out of range: must be more than 0 seconds
        "#]],
    );
}

#[test]
fn keystone_v2_and_two_domains_at_once_are_refused() {
    check(
        &MINIMAL.replace(
            "    driver: fake\n",
            "    auth-url: https://keystone.example.org/v2.0\n    username: ci\n    password: s3cret\n    project-name: ci\n    identity-api-version: 2\n    user-domain-name: Default\n    user-domain-id: default\n",
        ),
        expect![[r#"
            nodepool.yaml:12:27: error: providers[0].identity-api-version: identity API version 2: nodepool speaks Keystone v3 only; write `identity-api-version: 3` (v2 credentials work with v3, with `user-domain-name` and `project-domain-name` of their domain, `Default` unless told otherwise)
            nodepool.yaml:14:21: error: providers[0].user-domain-id: give user-domain-name or user-domain-id, not both
        "#]],
    );
}

#[test]
fn unrendered_templates_are_named() {
    check(
        &format!(
            "dburi: <%= @dburi %>\n{}",
            MINIMAL.replace(
                "max-servers: 10",
                "max-servers: '{{ max_servers }}'\n    keypair: \"{{ nodepool_keypair }}\""
            )
        ),
        expect![[r#"
            nodepool.yaml:1:8: error: dburi: looks like an unrendered ERB template: render the file before nodepool reads it
            nodepool.yaml:10:18: error: providers[0].max-servers: expected an integer, found "{{ max_servers }}"; it looks like an unrendered Jinja template: render the file before nodepool reads it
            nodepool.yaml:11:14: warning: providers[0].keypair: "{{ nodepool_keypair }}" looks like an unrendered Jinja template: render the file before nodepool reads it
        "#]],
    );
}

#[test]
fn a_nodepool_v3_file_gets_one_message() {
    check(
        "zookeeper-servers:\n  - host: zk1.example.org\nlabels:\n  - name: xenial\n    min-ready: 1\nproviders:\n  - name: cloud1\n    cloud: mycloud\n    pools:\n      - name: main\n        max-servers: 10\n",
        expect![[r#"
            nodepool.yaml:10:7: error: providers[0].pools: this is a nodepool v3 (or later) file: providers with `pools`, labels without `image`, ZooKeeper instead of a database. This version runs the earlier format (nodepool up to 0.4: `labels` with `image` and `providers`, `providers[].images`, `dburi`); see "Coming from nodepool v3" in docs/configuration.md for how each part maps
        "#]],
    );
    // Labels without images, ZooKeeper and no targets: v3 too, pools or not.
    check(
        "zookeeper-servers:\n  - host: zk1.example.org\nlabels:\n  - name: xenial\n    min-ready: 1\nproviders: []\n",
        expect![[r#"
            nodepool.yaml:4:5: error: labels[0]: this is a nodepool v3 (or later) file: providers with `pools`, labels without `image`, ZooKeeper instead of a database. This version runs the earlier format (nodepool up to 0.4: `labels` with `image` and `providers`, `providers[].images`, `dburi`); see "Coming from nodepool v3" in docs/configuration.md for how each part maps
        "#]],
    );
}

#[test]
fn the_2013_format_gets_its_labels_section_ready_to_paste() {
    check(
        "providers:\n  - name: rax\n    driver: fake\n    max-servers: 10\n    images:\n      - {name: precise, base-image: b, min-ram: 8192}\n  - name: hp\n    driver: fake\n    max-servers: 10\n    images:\n      - {name: precise, base-image: b, min-ram: 8192}\ntargets:\n  - name: jenkins1\n    images:\n      - name: precise\n        providers:\n          - name: rax\n            min-ready: 4\n          - name: hp\n            min-ready: 2\n  - name: jenkins2\n    images:\n      - name: precise\n        providers:\n          - name: rax\n            min-ready: 1\n",
        expect![[r#"
            nodepool.yaml:15:9: error: targets: this is the 2013 format: images listed under `targets[].images[]`, with a `min-ready` per provider. Since 2014 nodes are asked for by label: add this `labels:` section (each image's min-ready is the sum over its providers; the allocator spreads it over them), then remove `images` from each target

            labels:
              - name: precise
                image: precise
                min-ready: 7
                providers: [{name: rax}, {name: hp}]

        "#]],
    );
}
