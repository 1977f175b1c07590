//! Every file in `config-examples/` is a valid config.

use std::path::Path;

#[test]
fn every_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config-examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(errors) = crate::load(&path) {
                panic!("{} is invalid:\n{errors}", path.display());
            }
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "local.yaml",
            "nodepool-2014.yaml",
            "openstack.yaml",
            "postgresql.yaml"
        ]
    );
}

#[test]
fn the_local_example_needs_nothing_from_the_machine() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config-examples/local.yaml");
    let loaded = crate::load(&path).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let issues = loaded.check_environment(&crate::Environment::default());
    assert!(issues.is_empty(), "{issues:?}");
    assert!(
        loaded
            .config
            .providers
            .iter()
            .all(|p| p.driver == crate::Driver::Fake)
    );
}
