//! Store tests. Every test of `suite` runs on SQLite (a temporary file), on PostgreSQL and,
//! with the `mysql` feature, on MySQL (a database made for the test and dropped after it).

mod crash;
mod suite;
mod support;

/// Declares each suite test once per backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let db = super::support::TestDb::sqlite();
                    super::suite::$name(&db);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(db) = super::support::TestDb::postgres() else { return };
                    super::suite::$name(&db);
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            $(
                #[test]
                fn $name() {
                    let Some(db) = super::support::TestDb::mysql() else { return };
                    super::suite::$name(&db);
                }
            )*
        }
    };
}

on_every_backend!(
    migrations_and_installation_id,
    a_newer_schema_is_refused,
    an_unmigrated_store_says_so,
    node_lifecycle_with_events,
    wrong_moves_are_refused_and_write_nothing,
    duplicate_external_ids_are_refused,
    names_and_ids_compare_byte_for_byte,
    holds,
    image_lifecycle,
    requests_are_served_oldest_ready_first,
    failed_and_finished_requests_get_no_nodes,
    ending_a_request_returns_or_releases_its_nodes,
    daemons_claim_work_and_a_dead_ones_work_is_free,
    requests_that_ended_long_ago_are_forgotten,
    launches_and_builds_recorded_since_the_plan_win,
    build_requests,
    snapshot_sees_everything_in_order,
    pruning_keeps_live_histories,
    failures_are_kept_for_backoff_and_pruned_by_age,
    concurrent_claims_never_share_a_node,
    an_aborted_transaction_leaves_the_previous_state,
    host_keys_and_notes_join_a_nodes_history,
);

#[test]
fn a_lost_race_is_worth_retrying_and_says_so() {
    let error = crate::StoreError::Raced {
        subject: nodepool_model::Subject::Node(nodepool_model::NodeId::new(7)),
        change: "becoming ready".into(),
    };
    assert!(error.is_retryable());
    assert_eq!(
        error.to_string(),
        "node 7 was changed by another writer while becoming ready; try again"
    );
    let refused = crate::StoreError::Invalid("no".into());
    assert!(!refused.is_retryable());
}

#[test]
fn lock_timeouts_and_deadlocks_are_worth_retrying() {
    use diesel::result::{DatabaseErrorKind, Error};
    let error = |kind, message: &str| {
        crate::StoreError::from(Error::DatabaseError(kind, Box::new(message.to_owned())))
    };
    let mysql_timeout = error(
        DatabaseErrorKind::Unknown,
        "Lock wait timeout exceeded; try restarting transaction",
    );
    let pg_deadlock = error(DatabaseErrorKind::Unknown, "deadlock detected");
    let serialization = error(DatabaseErrorKind::SerializationFailure, "Deadlock found");
    let syntax = error(
        DatabaseErrorKind::Unknown,
        "You have an error in your SQL syntax",
    );
    assert!(mysql_timeout.is_retryable());
    assert!(pg_deadlock.is_retryable());
    assert!(serialization.is_retryable());
    assert!(!syntax.is_retryable());
}

#[test]
fn mysql_servers_without_skip_locked_are_refused_by_name() {
    use crate::check_mysql_version;
    assert_eq!(check_mysql_version("10.11.19-MariaDB-0+deb12u1"), Ok(()));
    assert_eq!(check_mysql_version("8.0.36"), Ok(()));
    assert_eq!(check_mysql_version("11.4.2-MariaDB"), Ok(()));
    assert_eq!(
        check_mysql_version("10.3.39-MariaDB-0+deb10u1"),
        Err("MariaDB 10.3.39-MariaDB-0+deb10u1 is too old: nodepool needs MariaDB 10.6 or newer (for SKIP LOCKED)".into())
    );
    assert_eq!(
        check_mysql_version("5.7.44-log"),
        Err(
            "MySQL 5.7.44-log is too old: nodepool needs MySQL 8.0 or newer (for SKIP LOCKED)"
                .into()
        )
    );
}

#[test]
fn a_build_without_mysql_says_how_to_get_it() {
    let uri = nodepool_config::DbUri::parse("mysql+pymysql://np:secret@db/np?charset=utf8", None)
        .unwrap();
    let error = crate::mysql_not_built(&uri).to_string();
    assert!(
        error.ends_with(": built without MySQL support: rebuild with `--features mysql`, or use sqlite:// or postgres://"),
        "{error}"
    );
    assert!(!error.contains("secret"), "{error}");
    if !crate::MYSQL_SUPPORTED {
        let Err(opened) = crate::Store::open(&uri, "test") else {
            panic!("a build without MySQL opened {uri}");
        };
        assert_eq!(opened.to_string(), error);
    }
}

/// The SQLAlchemy spelling real files carry opens the same database; options diesel does
/// not know (`charset`) are dropped.
#[cfg(feature = "mysql")]
#[test]
fn sqlalchemy_mysql_uris_open_the_same_store() {
    let Some(db) = support::TestDb::mysql() else {
        return;
    };
    let plain = db.uri.to_string();
    let written = format!(
        "{}?charset=utf8",
        plain.replacen("mysql://", "mysql+pymysql://", 1)
    );
    let uri = nodepool_config::DbUri::parse(&written, None).unwrap();
    let store = crate::Store::open(&uri, "test").unwrap();
    assert_eq!(store.backend(), crate::Backend::Mysql);
    assert_eq!(
        store.installation_id().unwrap(),
        db.store.installation_id().unwrap()
    );
}

/// Daemons starting together on a new server store all start: one migrates and makes the
/// installation id, the others wait for it and share it.
#[test]
fn daemons_starting_together_on_a_new_store_share_one_installation() {
    for db in support::TestDb::empty_on_servers() {
        let ids: Vec<String> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let store = crate::Store::open(&db.uri, "daemon").unwrap();
                        store.migrate(support::T0).unwrap();
                        store.installation_id().unwrap().to_string()
                    })
                })
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]), "{}: {ids:?}", db.uri);
    }
}
