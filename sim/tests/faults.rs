//! The storage-fault checks can fail: with the fault layer turned into a lost acknowledgement
//! (the statement runs, then the ledger is told it failed), a refused operation has in fact
//! written, and the simulator must say so.

use ledger_sim::{generate, run_losing_acknowledgements};

#[test]
fn a_write_whose_acknowledgement_is_lost_is_reported_as_a_divergence() {
    let scenario = generate(1, 2_000).with_faults(20);
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
