//! Crash safety with a real process: a writer killed with SIGKILL between recording an
//! intent and attaching the cloud's id leaves an intent that `Store::intents` lists, and a
//! writer killed inside a transaction leaves the state before it.
//!
//! The child is this test binary again, run with `NODEPOOL_CRASH_CHILD` set: it does its
//! writes, says how far it got on stdout, and waits to be killed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use nodepool_config::DbUri;
use nodepool_model::{LabelName, NodeState, ProviderName, Reason, ReasonCode};

use super::support::{T0, TestDb};
use crate::{NewNode, Store};

const CHILD: &str = "NODEPOOL_CRASH_CHILD";

/// Starts the line the child reports on; the test harness may print on the same line first.
const MARK: &str = "crash-child: ";

/// Runs the child part when this binary was started as a crash child; returns otherwise.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (step, uri) = spec.split_once(' ').unwrap();
    let uri = DbUri::parse(uri, None).unwrap();
    let store = Store::open(&uri, "doomed-daemon").unwrap();
    let new = NewNode::new(
        ProviderName::new("cloud1").unwrap(),
        LabelName::new("small").unwrap(),
    );
    let reason = Reason::new(ReasonCode::Demand, "label small has 0 of 1 ready");
    let mut out = std::io::stdout();
    match step {
        "after-intent" => {
            let node = store.create_node(&new, T0, &reason).unwrap();
            writeln!(out, "{MARK}intent {}", node.id).unwrap();
        }
        "inside-transaction" => {
            let mut conn = store.conn().unwrap();
            crate::connection::transaction(&mut conn, crate::connection::Mode::Write, |conn| {
                let id = crate::next_ids(conn, "node", 1)?;
                writeln!(out, "{MARK}writing {id}").unwrap();
                out.flush().unwrap();
                // Never returns: the parent kills us while the transaction is open.
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).unwrap();
                Ok(())
            })
            .unwrap();
        }
        other => panic!("unknown crash step {other}"),
    }
    out.flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

/// Starts the child at `step`, waits for its first line, kills it with SIGKILL.
fn kill_after(step: &str, uri: &DbUri) -> String {
    let uri = match uri {
        DbUri::Sqlite(path) => format!("sqlite://{}", path.display()),
        DbUri::Postgres(url) | DbUri::Mysql(url) => url.expose().to_owned(),
        other => panic!("{other}"),
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::crash::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{step} {uri}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // The test harness prints its own lines first; the child's report follows the mark.
    let report = loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the crash child ended before reaching {step}"
        );
        if let Some((_, report)) = line.split_once(MARK) {
            break report.trim().to_owned();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    report
}

fn check(db: &TestDb) {
    // Killed after recording the intent: the intent is there for recovery to resolve.
    let said = kill_after("after-intent", &db.uri);
    let id: u64 = said.strip_prefix("intent ").unwrap().parse().unwrap();
    let intents = db.store.intents().unwrap();
    assert_eq!(intents.nodes.len(), 1);
    assert_eq!(intents.nodes[0].id.get(), id);
    assert_eq!(intents.nodes[0].state, NodeState::Building);
    let events = db
        .store
        .events(nodepool_model::Subject::Node(intents.nodes[0].id))
        .unwrap();
    assert_eq!(
        (events.len(), events[0].actor.as_str()),
        (1, "doomed-daemon")
    );

    // Killed inside a transaction: the id it took is given back, and the store works.
    let said = kill_after("inside-transaction", &db.uri);
    let taken: u64 = said.strip_prefix("writing ").unwrap().parse().unwrap();
    let next = db
        .store
        .create_node(
            &NewNode::new(
                ProviderName::new("cloud1").unwrap(),
                LabelName::new("small").unwrap(),
            ),
            T0,
            &Reason::new(ReasonCode::parse("x"), "x"),
        )
        .unwrap();
    assert_eq!(
        next.id.get(),
        taken,
        "the killed transaction's id allocation was rolled back"
    );
}

#[test]
fn killed_writers_on_sqlite() {
    check(&TestDb::sqlite());
}

#[test]
fn killed_writers_on_postgres() {
    if let Some(db) = TestDb::postgres() {
        check(&db);
    }
}

#[cfg(feature = "mysql")]
#[test]
fn killed_writers_on_mysql() {
    if let Some(db) = TestDb::mysql() {
        check(&db);
    }
}
