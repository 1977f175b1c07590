//! `dburi` is shown without its secrets, however it is written.

use crate::DbUri;

/// A password no other text here holds.
const CANARY: &str = "Kx7canary";

fn shown(uri: &str) -> String {
    match DbUri::parse(uri, None) {
        Ok(parsed) => format!("{parsed} {parsed:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_password_is_never_shown_wherever_it_is_and_whatever_it_holds() {
    let cases = [
        format!("postgres://nodepool:{CANARY}@db.example.org/nodepool"),
        format!("postgresql+psycopg2://nodepool:{CANARY}@db/nodepool?sslmode=require"),
        format!("postgres://nodepool@db/nodepool?password={CANARY}"),
        format!("postgres://nodepool@db/nodepool?sslmode=require&PassWord={CANARY}&x=1"),
        format!("mysql://nodepool@db/nodepool?pass%77ord={CANARY}"),
        format!("mysql+pymysql://nodepool:{CANARY}%40x@db/nodepool"),
        format!("postgres://nodepool:{CANARY}?x@db/nodepool"),
        format!("postgres://nodepool:{CANARY}/x@db/nodepool"),
        format!("postgres://nodepool:12/{CANARY}@db/nodepool"),
        format!("postgres://nodepool:{CANARY}#x@db/nodepool"),
        format!("postgres://nodepool:a@{CANARY}@db/nodepool"),
        format!("postgres://nodepool:{CANARY}@/"),
        format!("oracle://scott:{CANARY}@db/orcl"),
        format!("nodepool:{CANARY}@db/nodepool"),
        format!("postgres//nodepool:{CANARY}@db/nodepool"),
    ];
    for uri in &cases {
        let shown = shown(uri);
        assert!(!shown.contains(CANARY), "{uri} is shown as {shown}");
        assert!(!shown.contains("Kx7"), "{uri} is shown as {shown}");
    }
}

#[test]
fn what_is_not_secret_is_shown_as_written() {
    let uri = DbUri::parse(
        &format!("postgres://nodepool:{CANARY}@db.example.org:5433/nodepool?sslmode=require&password={CANARY}"),
        None,
    )
    .unwrap();
    assert_eq!(
        uri.to_string(),
        "postgres://nodepool:***@db.example.org:5433/nodepool?sslmode=require&password=***"
    );
    let DbUri::Postgres(url) = &uri else {
        panic!("{uri:?}")
    };
    assert!(url.expose().contains(CANARY), "the connection gets it");
}

#[test]
fn a_password_with_reserved_characters_is_refused_with_how_to_write_it() {
    let error = DbUri::parse(&format!("postgres://nodepool:{CANARY}/x@db/nodepool"), None)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("postgres://*** is not a valid URL"),
        "{error}"
    );
    assert!(error.contains("`/` as %2F"), "{error}");
    let ok = DbUri::parse(
        &format!("postgres://nodepool:{CANARY}%2Fx@db/nodepool"),
        None,
    )
    .unwrap();
    assert_eq!(ok.to_string(), "postgres://nodepool:***@db/nodepool");
}

#[test]
fn a_drivers_message_is_scrubbed_of_the_password_as_written_and_decoded() {
    let DbUri::Postgres(url) = DbUri::parse(
        &format!("postgres://nodepool:{CANARY}%25z@db/nodepool?password=q{CANARY}"),
        None,
    )
    .unwrap() else {
        panic!()
    };
    let message = format!(
        "invalid percent-encoded token: \"{CANARY}%z\"; password \"{CANARY}%25z\" and q{CANARY}"
    );
    let scrubbed = url.scrub(&message);
    assert!(!scrubbed.contains(CANARY), "{scrubbed}");
    assert!(
        scrubbed.starts_with("invalid percent-encoded token: \"***\""),
        "{scrubbed}"
    );
}

#[test]
fn a_unix_socket_url_with_a_password_is_read_and_shown_without_it() {
    let uri = DbUri::parse(
        &format!("postgresql://nodepool:{CANARY}@/nodepool?host=/run/postgresql"),
        None,
    )
    .unwrap();
    assert_eq!(
        uri.to_string(),
        "postgres://nodepool:***@/nodepool?host=/run/postgresql"
    );
    let DbUri::Postgres(url) = &uri else {
        panic!("{uri:?}")
    };
    assert!(url.expose().contains(CANARY));
    assert_eq!(
        url.scrub(&format!("bad password {CANARY}")),
        "bad password ***"
    );
    let bare = DbUri::parse("postgres:///nodepool?host=/run/postgresql", None).unwrap();
    assert_eq!(
        bare.to_string(),
        "postgres:///nodepool?host=/run/postgresql"
    );
}
