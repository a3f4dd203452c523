//! The chaos test: randomized live migrations between two `vfio-nvme serve` processes under
//! the verifying workload, with injected faults — SIGSTOP/SIGCONT of either server for less and
//! for more than the client's timeout, a destination killed mid-stream and restarted, a client
//! disconnect in PRE_COPY, STOP_COPY, STOP and RESUMING, device resets, a flipped stream byte.
//! Every write the workload saw complete must read back after every fault, and the device must
//! migrate again.
//!
//! The run is seeded and prints its seed; `CHAOS_SEED=N` repeats a run's sequence of choices
//! and `CHAOS_MIGRATIONS=N` sets its length (the default keeps it to about a minute on two
//! cores; docs/RELIABILITY.md has a long run).

mod chaos_support;
mod common;

/// Migration attempts of the run `cargo test` makes.
const DEFAULT_MIGRATIONS: u64 = 40;

#[test]
fn randomized_migrations_with_injected_faults_lose_no_acknowledged_write() {
    let plan = chaos_support::Plan::from_env(DEFAULT_MIGRATIONS);
    let figures = chaos_support::run(&plan);
    println!(
        "chaos figures: {}",
        serde_json::to_string(&figures).expect("figures as JSON")
    );
    assert!(figures.migrations >= plan.migrations, "{figures:?}");
    assert_eq!(
        figures.faults.len(),
        chaos_support::Fault::ALL.len(),
        "every fault kind was injected: {figures:?}"
    );
}
