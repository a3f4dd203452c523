//! Namespace bytes lent to the migration stream: [`NamespaceLender`] turns a backend's hold
//! ([`nvme_device::backend::Backend::hold`]) into [`LentBytes`] that the vfio-user server sends
//! straight from the namespace's memory, and releases the hold when they are dropped.

use std::sync::Arc;
use std::time::Duration;

use nvme_device::namespace::Namespace;
use vfio_migration::Lender;
use vfio_migration::LentBytes;
use vfio_migration::Loan;

/// How long a hold waits for commands already changing the range to finish before the
/// source copies the range instead.
const HOLD_PATIENCE: Duration = Duration::from_millis(1);

/// Lends the bytes of one namespace, for the migration source. Loans are made only by
/// [`NamespaceLender::lend`] (the type is private to the driver), so every [`Loan`] it is asked
/// about names a range its backend holds.
#[derive(Debug)]
pub(crate) struct NamespaceLender {
    namespace: Arc<Namespace>,
}

impl NamespaceLender {
    /// A lender of `namespace`'s bytes.
    pub fn new(namespace: Arc<Namespace>) -> Self {
        Self { namespace }
    }

    /// Lends `len` bytes at byte `offset` (checked against the namespace by the caller), held
    /// unchanged until the returned bytes are dropped; `None` when the backend cannot hold
    /// them (not in memory, or busy being written), and the caller copies.
    pub fn lend(self: &Arc<Self>, offset: u64, len: usize) -> Option<LentBytes> {
        let held = self
            .namespace
            .backend()
            .hold(offset, len as u64, HOLD_PATIENCE)?;
        let loan = Loan {
            key: offset,
            addr: held.as_ptr() as usize,
            len: held.len(),
        };
        Some(LentBytes::new(Arc::clone(self) as Arc<dyn Lender>, loan))
    }
}

impl Lender for NamespaceLender {
    fn lent(&self, loan: &Loan) -> &[u8] {
        // SAFETY: every loan comes from `lend`, whose `hold` returned `addr`/`len` as the place
        // of namespace bytes in this process's memory. They stay mapped while the backend
        // lives, which `self.namespace` ensures for as long as `self`, and unchanged until
        // `give_back` releases the hold; the returned slice borrows the `LentBytes` that calls
        // this, which gives the loan back only when dropped, after every such borrow.
        unsafe { std::slice::from_raw_parts(loan.addr as *const u8, loan.len) }
    }

    fn give_back(&self, loan: &Loan) {
        self.namespace.backend().release(loan.key, loan.len as u64);
    }
}
