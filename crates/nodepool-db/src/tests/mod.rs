//! Store tests. Every test of `suite` runs on SQLite (a temporary file) and on PostgreSQL
//! (a database made for the test and dropped after it).

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
    };
}

on_every_backend!(
    migrations_and_installation_id,
    a_newer_schema_is_refused,
    an_unmigrated_store_says_so,
    node_lifecycle_with_events,
    wrong_moves_are_refused_and_write_nothing,
    duplicate_external_ids_are_refused,
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
