//! BAR0 of an in-process controller, for the `nvme-driver` host driver and for raw queues: a
//! subsystem's function ([`ControllerBar`]) or any controller, e.g. a private admin port
//! ([`PortBar`]).

use std::sync::Arc;
use std::sync::RwLock;

use nvme_driver::driver::Bar;

use super::Function;
use crate::controller::Controller;
use crate::subsystem::Subsystem;

/// BAR0 of an in-process controller. It can be re-pointed at another controller, which is how
/// a test "migrates" a guest: the guest's driver keeps running against the destination.
#[derive(Debug)]
pub struct ControllerBar {
    target: RwLock<(Arc<Subsystem>, Function)>,
}

impl ControllerBar {
    /// A BAR for `function` of `sub`.
    pub fn new(sub: &Arc<Subsystem>, function: Function) -> Arc<Self> {
        Arc::new(Self {
            target: RwLock::new((sub.clone(), function)),
        })
    }

    /// Points the BAR at `function` of `sub` from now on.
    pub fn retarget(&self, sub: &Arc<Subsystem>, function: Function) {
        *self
            .target
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (sub.clone(), function);
    }

    fn with<T>(&self, f: impl FnOnce(&Controller) -> T) -> T {
        let guard = self
            .target
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (sub, function) = &*guard;
        let ctrl = match function {
            Function::Primary => sub.primary(),
            Function::Vf(vfn) => sub
                .secondary(*vfn)
                .unwrap_or_else(|| panic!("the BAR's subsystem has no VF {vfn}")),
        };
        f(ctrl)
    }
}

impl Bar for ControllerBar {
    fn read32(&self, offset: u64) -> std::io::Result<u32> {
        Ok(self.with(|c| c.read_register(offset, 4)) as u32)
    }

    fn read64(&self, offset: u64) -> std::io::Result<u64> {
        Ok(self.with(|c| c.read_register(offset, 8)))
    }

    fn write32(&self, offset: u64, value: u32) -> std::io::Result<()> {
        self.with(|c| c.write_register(offset, 4, value.into()));
        Ok(())
    }

    fn doorbell(&self, offset: u64, value: u32) {
        self.with(|c| c.write_register(offset, 4, value.into()));
    }
}

/// BAR0 of one controller the test holds, e.g. a private admin port of a primary controller.
#[derive(Debug)]
pub struct PortBar(pub Arc<Controller>);

impl Bar for PortBar {
    fn read32(&self, offset: u64) -> std::io::Result<u32> {
        Ok(self.0.read_register(offset, 4) as u32)
    }

    fn read64(&self, offset: u64) -> std::io::Result<u64> {
        Ok(self.0.read_register(offset, 8))
    }

    fn write32(&self, offset: u64, value: u32) -> std::io::Result<()> {
        self.0.write_register(offset, 4, value.into());
        Ok(())
    }

    fn doorbell(&self, offset: u64, value: u32) {
        self.0.write_register(offset, 4, value.into());
    }
}
