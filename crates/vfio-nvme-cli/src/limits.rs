//! The limits of the controllers `vfio-nvme serve` builds, for the options of commands that
//! start their own servers (`demo`): taken from the subsystem configuration the servers use,
//! so the options' ranges cannot drift from what the servers accept.

use nvme_device::controller::ControllerConfig;
use nvme_device::subsystem::SubsystemConfig;

/// The limits every served controller has.
pub fn served() -> ControllerConfig {
    SubsystemConfig::new("limits", 1).limits
}

/// The most commands a served controller's queue can keep in flight: its entries (CAP.MQES
/// + 1) less the one that always stays empty.
pub fn served_queue_depth() -> u32 {
    served().max_queue_entries - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_limits_are_the_device_defaults() {
        let limits = served();
        assert!(limits.io_queue_pairs >= 4, "{limits:?}");
        assert_eq!(served_queue_depth() + 1, limits.max_queue_entries);
    }
}
