//! `Config::diff` names exactly what changed, for the daemon's live reload.

use expect_test::expect;

use super::{MINIMAL, load};
use crate::CronJob;

#[test]
fn identical_configs_have_no_changes() {
    let config = load(MINIMAL).config;
    let diff = config.diff(&config.clone());
    assert!(diff.is_empty());
    assert_eq!(diff.to_string(), "no changes");
}

#[test]
fn every_kind_of_change_is_named() {
    let old = load(&format!("{MINIMAL}  - name: doomed\n    driver: fake\n    max-servers: 1\n    images:\n      - name: ubuntu\n        base-image: U\n        min-ram: 1\n")).config;
    let new_text = format!(
        "cron:\n  image-update: '0 3 * * *'\n{}  - name: cloud9\n    driver: fake\n    max-servers: 5\n    images:\n      - name: ubuntu\n        base-image: U\n        min-ram: 1\n",
        MINIMAL
            .replace("max-servers: 10", "max-servers: 20\n    rate: 2")
            .replace(
                "min-ram: 2048",
                "min-ram: 4096\n      - name: centos\n        base-image: C\n        min-ram: 1"
            )
            .replace(
                "    image: ubuntu\n",
                "    image: ubuntu\n    min-ready: 5\n"
            )
            .replace(
                "labels:\n",
                "labels:\n  - name: new-label\n    image: centos\n    providers: [cloud1]\n"
            )
    );
    let new = load(&new_text).config;
    let diff = old.diff(&new);
    assert_eq!(diff.providers_added.len(), 1);
    assert_eq!(diff.providers_removed.len(), 1);
    assert_eq!(diff.providers_changed[0].fields, ["max-servers", "rate"]);
    assert_eq!(diff.cron_changed, [CronJob::ImageUpdate]);
    assert!(!diff.dburi_changed && !diff.script_dir_changed);
    expect![[r#"
        provider cloud9 added
        provider doomed removed
        provider cloud1 changed: max-servers, rate
        image centos added to provider cloud1
        image ubuntu on provider cloud1 changed: min-ram
        label new-label added
        label small changed: min-ready
        cron image-update changed"#]]
    .assert_eq(&diff.to_string());
    // And back again.
    expect![[r#"
        provider doomed added
        provider cloud9 removed
        provider cloud1 changed: max-servers, rate
        image centos removed from provider cloud1
        image ubuntu on provider cloud1 changed: min-ram
        label new-label removed
        label small changed: min-ready
        cron image-update changed"#]]
    .assert_eq(&new.diff(&old).to_string());
}

#[test]
fn credential_and_store_changes() {
    let old = load(&MINIMAL.replace("driver: fake", "cloud: east")).config;
    let new = load(&format!(
        "dburi: postgres://np@db/np\nscript-dir: /s\n{}",
        MINIMAL.replace("driver: fake", "cloud: west")
    ))
    .config;
    expect![[r#"
        provider cloud1 changed: driver
        dburi changed (takes effect at the next restart)
        script-dir changed"#]]
    .assert_eq(&old.diff(&new).to_string());
}

#[test]
fn reordering_is_not_a_change() {
    let two = format!(
        "{MINIMAL}  - name: cloud2\n    driver: fake\n    max-servers: 1\n    images:\n      - name: ubuntu\n        base-image: U\n        min-ram: 1\n"
    );
    let old = load(&two).config;
    let mut new = old.clone();
    new.providers.reverse();
    assert!(old.diff(&new).is_empty());
}
