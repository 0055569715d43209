//! The storage-fault checks can fail: with the fault layer given a deliberate defect, the
//! simulator must report what it left behind.

use ledger_sim::faults::Family;
use ledger_sim::{generate, run_committing_killed_work, run_losing_acknowledgements};

/// The fault layer turned into a lost acknowledgement (the statement runs, then the ledger is
/// told it failed): a refused operation has in fact written.
#[test]
fn a_write_whose_acknowledgement_is_lost_is_reported_as_a_divergence() {
    let scenario = generate(1, 2_000).with_faults_of(20, &[Family::Injected]);
    let divergence = run_losing_acknowledgements(&scenario)
        .expect_err("a lost acknowledgement of a write outside a transaction leaves it written");
    println!("{divergence}");
    assert!(
        divergence
            .expected
            .starts_with("nothing written by the refused attempt"),
        "{divergence}"
    );
}

/// A killed connection that commits its transaction's work before it is closed: the operation
/// counts as refused, yet part of it is in the file.
#[test]
fn work_that_survives_a_killed_connection_is_reported_as_a_divergence() {
    let scenario = generate(1, 2_000).with_faults_of(20, &[Family::Kill]);
    let divergence = run_committing_killed_work(&scenario)
        .expect_err("a killed transaction committed leaves its first writes behind");
    println!("{divergence}");
    assert!(
        divergence
            .expected
            .starts_with("nothing written by the refused attempt"),
        "{divergence}"
    );
}
