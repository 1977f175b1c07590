//! secure.conf: its `[database] dburi` replaces the file's, as in nodepool 0.3 and 0.4.

use std::path::Path;

use super::{MINIMAL, load};
use crate::{DbUri, Secure};

const SECURE: &str = "\
# nodepool secure.conf, as puppet-nodepool wrote it
[database]
dburi = mysql+pymysql://nodepool:s3cret@db.example.org/nodepool

[jenkins \"jenkins01\"]
user=nodepool
apikey: 0f1e2d3c
credentials=a1b2c3d4
url=https://jenkins01.example.org/
";

#[test]
fn its_dburi_replaces_the_files_and_says_so() {
    let secure = Secure::parse(SECURE, Path::new("/etc/nodepool/secure.conf")).unwrap();
    assert_eq!(secure.dburi.as_ref().map(|(_, at)| at.line), Some(3));

    // A file without dburi takes secure.conf's quietly.
    let mut loaded = load(MINIMAL);
    assert_eq!(loaded.apply_secure(&secure), Ok(None));
    assert_eq!(
        loaded.config.dburi,
        DbUri::parse("mysql://nodepool:s3cret@db.example.org/nodepool", None).unwrap()
    );

    // One with another dburi is told which one is used, without the password.
    let mut loaded = load(&format!(
        "dburi: sqlite:///var/lib/nodepool/np.sqlite\n{MINIMAL}"
    ));
    let warning = loaded.apply_secure(&secure).unwrap().unwrap();
    assert_eq!(
        warning.to_string(),
        "nodepool.yaml:1:8: warning: dburi: is replaced by `[database] dburi` of /etc/nodepool/secure.conf (line 3), as nodepool 0.3 and 0.4 did"
    );
    assert!(matches!(loaded.config.dburi, DbUri::Mysql(_)));
}

#[test]
fn a_secure_conf_without_a_database_section_changes_nothing() {
    let secure = Secure::parse("[jenkins \"j\"]\nuser=x\n", Path::new("secure.conf")).unwrap();
    let mut loaded = load(MINIMAL);
    let before = loaded.config.dburi.clone();
    assert_eq!(loaded.apply_secure(&secure), Ok(None));
    assert_eq!(loaded.config.dburi, before);
}

#[test]
fn mistakes_in_it_are_named_with_their_line() {
    let error = Secure::parse(
        "[database]\ndburi mysql://x@db/np\n",
        Path::new("secure.conf"),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "secure.conf:2:1: error: database: unknown key \"dburi mysql\"; expected `dburi = URL`"
    );
    let error = Secure::parse("[jenkins]\nsome words\n", Path::new("secure.conf")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "secure.conf:2:1: error: jenkins: expected `[section]`, `key = value` or a comment"
    );
    let secure = Secure::parse(
        "[database]\n  dburi = oracle://x@db/np\n",
        Path::new("secure.conf"),
    )
    .unwrap();
    let error = load(MINIMAL).apply_secure(&secure).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("secure.conf:2:3: error: database.dburi: unsupported database \"oracle\""),
        "{error}"
    );
    // Given with -s, a missing file is an error; the default one may be absent.
    let missing = Path::new("/nonexistent/secure.conf");
    assert!(
        Secure::read(missing, true)
            .unwrap_err()
            .to_string()
            .contains("cannot read it")
    );
    assert_eq!(Secure::read(missing, false), Ok(None));
}
