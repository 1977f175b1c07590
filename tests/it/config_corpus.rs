//! The config corpus (`tests/configs/`): every file gets the verdict and messages its
//! snapshot records, from the real `nodepool config-validate`.

use std::process::Command;

use super::root;

/// The corpus, in the order of its README.
const CORPUS: &[&str] = &[
    "puppet-2014",
    "puppet-unrendered",
    "ansible-jinja",
    "clouds-yaml",
    "dib-0.3",
    "dib-mistakes",
    "transitional-0.4",
    "format-2013",
    "v3-pools",
    "misspelled",
    "yaml-styles",
    "anchors",
    "large",
    "sqlalchemy-mysql",
];

/// What a build without the MySQL store adds for a `mysql://` dburi (and a build with it
/// does not): taken out of the snapshots, which every build shares, and checked here.
const NO_MYSQL: &str = "built without MySQL support";

/// Runs `config-validate` on one file and returns the exit code and what it printed.
fn validate(name: &str) -> (i32, String) {
    let path = format!("tests/configs/{name}.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_nodepool"))
        .args(["-c", &path, "config-validate"])
        .current_dir(root())
        .env("OS_CLIENT_CONFIG_FILE", "tests/configs/clouds.yaml")
        .output()
        .expect("the nodepool binary runs");
    let code = output.status.code().expect("nodepool exits");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mysql_dburi = std::fs::read_to_string(root().join(&path))
        .unwrap()
        .lines()
        .any(|l| l.starts_with("dburi:") && l.contains("mysql"));
    let mut dropped = 0;
    let stderr: String = stderr
        .lines()
        .filter(|line| {
            let no_mysql = line.contains(NO_MYSQL);
            dropped += usize::from(no_mysql);
            !no_mysql
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let expect_dropped = usize::from(mysql_dburi && code == 0 && !nodepool_db::MYSQL_SUPPORTED);
    assert_eq!(dropped, expect_dropped, "{name}: the MySQL warning");
    // The count of warnings on stdout follows what was taken out.
    let stdout = if dropped > 0 {
        let (head, _) = stdout.rsplit_once(" (").unwrap();
        let warnings = stderr.lines().filter(|l| l.contains(": warning: ")).count();
        format!(
            "{head} ({warnings} warning{})\n",
            if warnings == 1 { "" } else { "s" }
        )
    } else {
        stdout
    };
    (
        code,
        format!("exit {code}\n--- stdout\n{stdout}--- stderr\n{stderr}"),
    )
}

#[test]
fn every_file_gets_its_verdict_and_messages() {
    for name in CORPUS {
        let (_, report) = validate(name);
        insta::assert_snapshot!(*name, report);
    }
}

#[test]
fn old_files_nodepool_ran_are_valid_and_the_others_are_refused_with_exit_2() {
    let expect = |name: &str| match name {
        // What nodepool itself would not run, or what cannot run here.
        "puppet-unrendered" | "ansible-jinja" | "dib-mistakes" | "format-2013" | "v3-pools"
        | "misspelled" => 2,
        _ => 0,
    };
    for name in CORPUS {
        assert_eq!(validate(name).0, expect(name), "{name}");
    }
}

#[test]
fn the_corpus_lists_every_file_and_large_yaml_is_what_large_py_writes() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/configs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".yaml").map(str::to_owned))
        .filter(|f| f != "clouds")
        .collect();
    files.sort();
    let mut listed: Vec<String> = CORPUS.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed);
    let written = Command::new("python3")
        .arg("large.py")
        .current_dir(root().join("tests/configs"))
        .output()
        .expect("python3 runs large.py");
    assert!(written.status.success());
    assert_eq!(
        String::from_utf8(written.stdout).unwrap(),
        std::fs::read_to_string(root().join("tests/configs/large.yaml")).unwrap()
    );
}
