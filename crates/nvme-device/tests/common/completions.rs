//! Waiting for a set of commands' completions, shared by the test files that keep many
//! commands in flight.

use std::collections::HashMap;
use std::time::Duration;
use std::time::Instant;

use nvme_device::testing;
use nvme_driver::driver::QueuePair;
use nvme_spec::status::Status;

/// Waits for the completions of every command in `cids` on `qp`, in any order (each exactly
/// once, no other), and returns their statuses in `cids` order.
pub fn collect(qp: &mut QueuePair, cids: &[u16]) -> Vec<Status> {
    let mut seen: HashMap<u16, Status> = HashMap::new();
    let deadline = Instant::now() + testing::PATIENCE;
    while seen.len() < cids.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} completed",
            seen.len(),
            cids.len()
        );
        qp.poll(|c| {
            assert!(cids.contains(&c.cid), "unexpected completion {}", c.cid);
            assert!(
                seen.insert(c.cid, c.status.status()).is_none(),
                "completed twice"
            );
        });
        std::thread::sleep(Duration::from_micros(100));
    }
    cids.iter().map(|cid| seen[cid]).collect()
}
