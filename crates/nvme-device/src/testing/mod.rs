//! An in-process test host for the device, compiled only with the `test-utils` feature.
//!
//! A [`TestHost`] is an NVM subsystem with a primary controller and N secondary controllers
//! over the namespaces a test chooses, each controller with its own (initially empty) guest
//! address space and an interrupt counter. Around it:
//!
//! * [`host_memory`] and [`GuardedMemory`] put host memory into one or more controllers' address
//!   spaces (a guard proves the controller never wrote outside what was mapped);
//! * [`ControllerBar`] is BAR0 of a controller for the `nvme-driver` host driver (and for
//!   [`RawQueue`]), re-pointable at another subsystem to "migrate" a guest; [`PortBar`] is BAR0
//!   of a controller the test holds, and [`TestHost::private_port`] drives a private admin port
//!   of the primary controller through it;
//! * [`RawQueue`] and [`raw_enable`] drive a controller entry by entry, where the driver would
//!   hide what a test needs to see (chosen CIDs, late CQ head doorbells, bad values);
//! * [`HostShadow`] gives raw queues a host's shadow doorbells (Doorbell Buffer Config);
//! * [`CdqReader`] reads a TP4159 User Data Migration Queue the way a host does;
//! * [`lm`] issues TP4159 Migration Send and Receive on a primary controller;
//! * [`settle`] runs a controller until it has nothing left to do, so a test sees every effect
//!   of what it did, and [`between_passes`] makes a guest's writes reach it all at once;
//! * [`eventually`], [`wait_for`], [`io`] and [`status`] wait and unwrap with generous timeouts;
//!   [`in_flight`] counts a controller's commands on asynchronous backends, [`resets`] its
//!   resets.
//!
//! Tests that need the feature enable it through a dev-dependency: this crate's own integration
//! tests name `nvme-device` itself with `features = ["test-utils"]`, which Cargo unifies into
//! the library the tests link (a `cfg(test)` module would not reach integration tests).
//!
//! Everything here panics with a message on failure, as a test helper should; none of it is
//! part of a normal build.

#![forbid(unsafe_code)]

mod bar;
mod cdq;
pub mod lm;
mod memory;
mod phase;
mod raw_queue;
mod shadow;
mod wait;

use std::sync::Arc;

pub use bar::ControllerBar;
pub use bar::PortBar;
pub use cdq::CdqReader;
pub use memory::CopiedMemory;
pub use memory::GUARD_BYTE;
pub use memory::GuardedMemory;
pub use memory::host_memory;
use nvme_driver::driver::Driver;
use nvme_driver::memory::HostMemory;
pub use raw_queue::RawQueue;
pub use raw_queue::raw_enable;
pub use shadow::HostShadow;
use shmem::AddressSpace;
pub use wait::PATIENCE;
pub use wait::between_passes;
pub use wait::drive_manually;
pub use wait::eventually;
pub use wait::in_flight;
pub use wait::io;
pub use wait::resets;
pub use wait::settle;
pub use wait::status;
pub use wait::wait_for;

use crate::controller::Controller;
use crate::interrupt::CountingInterrupt;
use crate::memory::DmaMemory;
use crate::subsystem::NamespaceSpec;
use crate::subsystem::PRIMARY_CNTLID;
use crate::subsystem::Subsystem;
use crate::subsystem::SubsystemConfig;
use crate::subsystem::secondary_cntlid;

/// Which controller of a subsystem a test means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// The primary controller (PF).
    Primary,
    /// The secondary controller behind VF `vfn` (1-based).
    Vf(u16),
}

impl Function {
    /// Index of the function's address space and interrupt counter: 0 for the PF, `vfn` for a VF.
    fn index(self) -> usize {
        match self {
            Function::Primary => 0,
            Function::Vf(vfn) => usize::from(vfn),
        }
    }
}

/// An in-process NVM subsystem whose controllers each reach their own guest address space and
/// count their interrupts.
#[derive(Debug)]
pub struct TestHost {
    subsystem: Arc<Subsystem>,
    /// Per function (see [`Function::index`]), what its controller reaches.
    spaces: Vec<Arc<AddressSpace>>,
    /// Per function, the interrupts its controller raised, by vector.
    interrupts: Vec<Arc<CountingInterrupt>>,
}

impl TestHost {
    /// Builds the subsystem `config` describes over `namespaces` (NSIDs 1, 2, … in order).
    /// Every address space starts empty; every controller counts its interrupts.
    ///
    /// # Panics
    ///
    /// If the subsystem cannot be built (the error says why).
    pub fn new(config: SubsystemConfig, namespaces: Vec<NamespaceSpec>) -> Self {
        let functions = usize::from(config.secondaries) + 1;
        let vectors = config.limits.msix_vectors;
        let spaces: Vec<Arc<AddressSpace>> = (0..functions)
            .map(|_| Arc::new(AddressSpace::new()))
            .collect();
        let cntlids: Vec<u16> = std::iter::once(PRIMARY_CNTLID)
            .chain((1..=config.secondaries).map(secondary_cntlid))
            .collect();
        let by_cntlid = spaces.clone();
        let subsystem = Subsystem::new(config, namespaces, move |cntlid| -> Arc<dyn DmaMemory> {
            let index = cntlids
                .iter()
                .position(|&c| c == cntlid)
                .expect("the subsystem asked for memory of a CNTLID it does not have");
            by_cntlid[index].clone()
        })
        .unwrap_or_else(|err| panic!("cannot build the test subsystem: {err}"));
        let host = Self {
            subsystem: Arc::new(subsystem),
            spaces,
            interrupts: (0..functions)
                .map(|_| Arc::new(CountingInterrupt::new(vectors)))
                .collect(),
        };
        // The controllers in function order: the PF, then the VFs by VFN.
        let controllers =
            std::iter::once(host.subsystem.primary()).chain(host.subsystem.secondaries());
        for (controller, irq) in controllers.zip(&host.interrupts) {
            controller.set_interrupt(irq.clone());
        }
        host
    }

    /// The subsystem.
    pub fn subsystem(&self) -> &Arc<Subsystem> {
        &self.subsystem
    }

    /// The controller of `function`.
    ///
    /// # Panics
    ///
    /// If the subsystem has no such VF.
    pub fn controller(&self, function: Function) -> &Controller {
        match function {
            Function::Primary => self.subsystem.primary(),
            Function::Vf(vfn) => self
                .subsystem
                .secondary(vfn)
                .unwrap_or_else(|| panic!("the test subsystem has no VF {vfn}")),
        }
    }

    /// The guest address space the controller of `function` reaches.
    pub fn space(&self, function: Function) -> &Arc<AddressSpace> {
        &self.spaces[function.index()]
    }

    /// The interrupts the controller of `function` raised, by vector (until a test routes them
    /// elsewhere with [`Controller::set_interrupt`]).
    pub fn interrupts(&self, function: Function) -> &CountingInterrupt {
        &self.interrupts[function.index()]
    }

    /// BAR0 of the controller of `function`.
    pub fn bar(&self, function: Function) -> Arc<ControllerBar> {
        ControllerBar::new(&self.subsystem, function)
    }

    /// `len` bytes of host memory at `iova`, mapped into the address space of `function`.
    pub fn memory(&self, function: Function, len: u64, iova: u64) -> Arc<HostMemory> {
        host_memory(len, iova, &[self.space(function)])
    }

    /// A private admin port of the primary controller with an address space of its own, and
    /// the `nvme-driver` host driver brought up on it with `len` bytes of host memory at `iova`.
    ///
    /// # Panics
    ///
    /// If the port cannot be opened or does not come up.
    pub fn private_port(&self, len: u64, iova: u64) -> PrivatePort {
        let space = Arc::new(AddressSpace::new());
        let controller = Arc::new(
            self.subsystem
                .open_private_port(space.clone())
                .unwrap_or_else(|err| panic!("cannot open a private port: {err}")),
        );
        let mem = host_memory(len, iova, &[&space]);
        let driver = Driver::new(Arc::new(PortBar(controller.clone())), mem)
            .unwrap_or_else(|err| panic!("the driver cannot bring up the private port: {err}"));
        PrivatePort {
            controller,
            space,
            driver,
        }
    }

    /// The `nvme-driver` host driver on `function`, with `len` bytes of host memory at `iova`;
    /// the controller is enabled with an admin queue.
    ///
    /// # Panics
    ///
    /// If the controller does not come up.
    pub fn driver(&self, function: Function, len: u64, iova: u64) -> Driver {
        Driver::new(self.bar(function), self.memory(function, len, iova))
            .unwrap_or_else(|err| panic!("the driver cannot bring up {function:?}: {err}"))
    }
}

/// A private admin port of a test subsystem's primary controller, driven by the host driver.
#[derive(Debug)]
pub struct PrivatePort {
    /// The port.
    pub controller: Arc<Controller>,
    /// The address space its DMA reaches (nothing else's).
    pub space: Arc<AddressSpace>,
    /// The host driver on it, with an admin queue.
    pub driver: Driver,
}
