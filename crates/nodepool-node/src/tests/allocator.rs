//! The 2014 allocator's own test cases (`nodepool/tests/test_allocator.py`), with the same
//! inputs and expected outputs: the sixteen docs-era scenarios, `negative_provider`, and the
//! fairness (round-robin) scenarios over eleven rounds.

use nodepool_model::LabelName;

use crate::allocation::{Allocator, History};

fn label(n: usize) -> LabelName {
    format!("label{n}").parse().unwrap()
}

/// Providers with the given capacities and one request per amount (label1, label2, ...);
/// `order` lists the (request, provider) pairs in the order the 2014 test added them; grants
/// are made provider by provider. Returns each pair's grant in that order (the 2014 tests'
/// AGT order).
fn agts(providers: &[i64], amounts: &[u64], order: &[(usize, usize)]) -> Vec<u64> {
    let history = History::new();
    let mut a = Allocator::new(&history);
    let ps: Vec<_> = providers.iter().map(|&n| a.add_provider(n)).collect();
    let rs: Vec<_> = amounts
        .iter()
        .enumerate()
        .map(|(i, amount)| a.add_request(label(i + 1), *amount))
        .collect();
    let subs: Vec<_> = order
        .iter()
        .map(|&(r, p)| a.add_supplier(rs[r], ps[p], 0))
        .collect();
    for p in ps {
        a.make_grants(p);
    }
    subs.into_iter().map(|s| a.granted(s)).collect()
}

#[test]
fn one_label() {
    let run = |p1, l1| agts(&[p1], &[l1], &[(0, 0)]);
    assert_eq!(run(10, 1), [1], "one_node");
    assert_eq!(run(10, 2), [2], "two_nodes");
}

#[test]
fn two_labels() {
    let run = |p1, l1, l2| agts(&[p1], &[l1, l2], &[(0, 0), (1, 0)]);
    assert_eq!(run(10, 1, 1), [1, 1], "one_node");
    assert_eq!(run(10, 2, 2), [2, 2], "two_nodes");
}

#[test]
fn two_providers_two_labels() {
    let run = |p1, p2, l1, l2| agts(&[p1, p2], &[l1, l2], &[(0, 0), (1, 0), (0, 1), (1, 1)]);
    assert_eq!(run(10, 10, 1, 1), [1, 1, 0, 0], "one_node");
    assert_eq!(run(10, 10, 2, 2), [1, 1, 1, 1], "two_nodes");
    assert_eq!(run(10, 10, 3, 3), [2, 2, 1, 1], "three_nodes");
    assert_eq!(run(10, 10, 4, 4), [2, 2, 2, 2], "four_nodes");
    assert_eq!(run(4, 4, 4, 4), [2, 2, 2, 2], "four_nodes_at_quota");
    assert_eq!(run(2, 2, 4, 4), [1, 1, 1, 1], "four_nodes_over_quota");
    assert_eq!(run(-5, 20, 5, 5), [0, 0, 5, 5], "negative_provider");
}

#[test]
fn two_providers_two_labels_one_shared() {
    // As the 2014 code (not its docstring) has it: label1 only from provider1, label2 from
    // both.
    let run = |p1, p2, l1, l2| agts(&[p1, p2], &[l1, l2], &[(0, 0), (1, 0), (1, 1)]);
    assert_eq!(run(10, 10, 1, 1), [1, 1, 0], "one_node");
    assert_eq!(run(10, 10, 2, 2), [2, 1, 1], "two_nodes");
    assert_eq!(run(10, 10, 3, 3), [3, 2, 1], "three_nodes");
    assert_eq!(run(10, 10, 4, 4), [4, 2, 2], "four_nodes");
    assert_eq!(run(4, 4, 4, 4), [4, 0, 4], "four_nodes_at_quota");
    assert_eq!(run(2, 2, 4, 4), [2, 0, 2], "four_nodes_over_quota");
}

/// Eleven rounds of eight labels on two providers sharing one history; `fixed` pins label1
/// to provider1 and label8 to provider2. Returns the granted label names, provider1's
/// grants then provider2's, round after round.
fn round_robin(p1: i64, p2: i64, amounts: [u64; 8], fixed: bool) -> Vec<String> {
    let mut history = History::new();
    let mut granted = Vec::new();
    for _ in 0..11 {
        let mut a = Allocator::new(&history);
        let ap1 = a.add_provider(p1);
        let ap2 = a.add_provider(p2);
        let rs: Vec<_> = (0..8)
            .map(|i| a.add_request(label(i + 1), amounts[i]))
            .collect();
        if fixed {
            a.add_supplier(rs[0], ap1, 0);
            a.add_supplier(rs[7], ap2, 0);
            for &r in &rs[1..7] {
                a.add_supplier(r, ap1, 0);
                a.add_supplier(r, ap2, 0);
            }
        } else {
            for &r in &rs {
                a.add_supplier(r, ap1, 0);
                a.add_supplier(r, ap2, 0);
            }
        }
        a.make_grants(ap1);
        granted.extend(a.grants(ap1).map(|(l, _)| l.to_string()));
        a.make_grants(ap2);
        granted.extend(a.grants(ap2).map(|(l, _)| l.to_string()));
        let round = a.round();
        history.push(round);
    }
    granted
}

fn names(list: &[usize]) -> Vec<String> {
    list.iter().map(|n| format!("label{n}")).collect()
}

#[test]
fn round_robin_one_to_one() {
    assert_eq!(
        round_robin(1, 0, [1; 8], false),
        names(&[7, 1, 2, 3, 4, 5, 6, 8, 7, 1, 2])
    );
}

#[test]
fn round_robin_at_quota() {
    assert_eq!(
        round_robin(4, 4, [1; 8], false),
        names(&[1, 3, 5, 7, 2, 4, 6, 8].repeat(11))
    );
}

#[test]
fn round_robin_big_fish_little_pond() {
    assert_eq!(
        round_robin(1, 1, [100, 1, 1, 1, 1, 1, 1, 1], false),
        names(&[
            1, 1, 1, 2, 1, 3, 1, 4, 1, 5, 1, 6, 1, 7, 1, 8, 1, 2, 1, 3, 1, 4
        ])
    );
}

#[test]
fn round_robin_fixed_even() {
    assert_eq!(
        round_robin(1, 1, [1; 8], true),
        names(&[
            1, 6, 1, 8, 1, 2, 1, 3, 1, 4, 1, 5, 1, 7, 1, 6, 1, 8, 1, 2, 1, 3
        ])
    );
}

#[test]
fn round_robin_fixed_over_subscribed() {
    assert_eq!(
        round_robin(1, 1, [20; 8], true),
        names(&[
            1, 6, 2, 8, 3, 3, 4, 4, 5, 5, 7, 7, 1, 6, 2, 8, 3, 3, 4, 4, 5, 5
        ])
    );
}

#[test]
fn round_robin_fixed_even_when_there_is_enough() {
    assert_eq!(
        round_robin(4, 4, [1; 8], true),
        names(&[1, 2, 4, 6, 8, 3, 5, 7].repeat(11))
    );
}

#[test]
fn half_rounds_away_from_zero() {
    // 2014's worked example: each sub-request is 0.5, and round(0.5) = 1.
    assert_eq!(
        agts(&[10, 10], &[1, 1], &[(0, 0), (1, 0), (0, 1), (1, 1)]),
        [1, 1, 0, 0]
    );
    // 2.5 of 5 rounds to 3, not to the even 2 (banker's rounding would give 2).
    assert_eq!(agts(&[5], &[5, 5], &[(0, 0), (1, 0)]), [3, 2]);
}

#[test]
fn history_counts_consecutive_rounds_without_nodes() {
    let mut history = History::new();
    let mut round = |granted| {
        let mut r = crate::Round::new();
        r.insert(
            label(1),
            crate::allocation::Tally {
                requested: 1.0,
                granted,
            },
        );
        history.push(r);
    };
    round(0);
    round(1);
    round(0);
    round(0);
    assert_eq!(history.wait_time(&label(1)), 2);
    assert_eq!(
        history.wait_time(&label(2)),
        0,
        "a label absent from the last round"
    );
}
