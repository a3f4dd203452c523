//! Saving reads that borrow the device's bytes instead of copying them: [`SaveReply`] and
//! [`LentBytes`].
//!
//! A saving read normally copies the stream into the reader's buffer. Most of a device's stream
//! can be bytes that already sit in the process's memory (a RAM namespace), which the consumer
//! hands to the kernel anyway (a socket send, itself a copy): copying them into a buffer first
//! is a copy the socket does not force. A [`SaveSource`](crate::SaveSource) that can keep such
//! bytes unchanged for a while *lends* them ([`SaveReply::lend`]): the reply then records
//! where, between its own bytes, the lent ones go, and the consumer sends both with one
//! scatter/gather call. Dropping a [`LentBytes`] gives the bytes back ([`Lender::give_back`]),
//! so a consumer holds them only as long as it needs them.
//!
//! A consumer that wants plain bytes (a kernel-style `read()`) uses [`SaveReply::copying`]: lent
//! bytes are then copied in at once and given back, so sources have one code path.

use std::sync::Arc;

/// What a [`Lender`] needs to find and give back one loan: chosen by the lender, opaque to
/// everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loan {
    /// The lender's key for the loan (for example an offset in its storage).
    pub key: u64,
    /// The lender's address for the loan (for example where the bytes are mapped).
    pub addr: usize,
    /// Bytes lent.
    pub len: usize,
}

/// A source of bytes that stay unchanged while lent.
pub trait Lender: Send + Sync {
    /// The bytes of `loan`. They must stay valid and unchanged until [`Lender::give_back`] is
    /// called for the loan (which [`LentBytes`] does when dropped, after every borrow of them
    /// has ended).
    fn lent(&self, loan: &Loan) -> &[u8];
    /// Ends `loan`: the bytes may change again.
    fn give_back(&self, loan: &Loan);
}

/// Bytes a saving source lends to the reader of its stream; given back when dropped.
pub struct LentBytes {
    lender: Arc<dyn Lender>,
    loan: Loan,
}

impl LentBytes {
    /// The loan `loan` of `lender`; [`Lender::give_back`] is called when this is dropped.
    pub fn new(lender: Arc<dyn Lender>, loan: Loan) -> Self {
        Self { lender, loan }
    }

    /// The lent bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.lender.lent(&self.loan)
    }

    /// How many bytes are lent.
    #[must_use]
    pub fn len(&self) -> usize {
        self.loan.len
    }

    /// Whether nothing is lent.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.loan.len == 0
    }
}

impl Drop for LentBytes {
    fn drop(&mut self) {
        self.lender.give_back(&self.loan);
    }
}

impl core::fmt::Debug for LentBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LentBytes")
            .field("loan", &self.loan)
            .finish()
    }
}

/// Lent bytes placed in a reply: they follow the reply's first `at` own bytes.
pub type Placed = (usize, LentBytes);

/// The reply a saving read fills: at most `buf.len()` stream bytes, each either the reply's own
/// (written into `buf`, in order) or lent and placed between them.
#[derive(Debug)]
pub struct SaveReply<'a> {
    buf: &'a mut [u8],
    owned: usize,
    lent_bytes: usize,
    /// `None`: lent bytes are copied in (a consumer that wants plain bytes).
    lent: Option<&'a mut Vec<Placed>>,
    /// A source claimed more bytes than there was room for: (claimed, room).
    overrun: Option<(usize, usize)>,
}

impl<'a> SaveReply<'a> {
    /// A reply of up to `buf.len()` bytes, all copied into `buf`.
    pub fn copying(buf: &'a mut [u8]) -> Self {
        Self {
            buf,
            owned: 0,
            lent_bytes: 0,
            lent: None,
            overrun: None,
        }
    }

    /// A reply of up to `buf.len()` bytes whose own bytes go into `buf` and whose lent bytes are
    /// appended to `lent` (which should be empty) with their place.
    pub fn lending(buf: &'a mut [u8], lent: &'a mut Vec<Placed>) -> Self {
        Self {
            lent: Some(lent),
            ..Self::copying(buf)
        }
    }

    /// Stream bytes in the reply so far, own and lent.
    #[must_use]
    pub fn len(&self) -> usize {
        self.owned + self.lent_bytes
    }

    /// Whether the reply holds no byte yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes that may still be added.
    #[must_use]
    pub fn room(&self) -> usize {
        self.buf.len() - self.len()
    }

    /// Whether lent bytes stay lent (a [`Self::lending`] reply) rather than being copied in: a
    /// source lends only then, and copies its bytes the cheapest way otherwise.
    #[must_use]
    pub fn lends(&self) -> bool {
        self.lent.is_some()
    }

    /// The room, as the place where the next own bytes go; [`Self::commit`] says how many were
    /// written.
    pub fn spare(&mut self) -> &mut [u8] {
        let room = self.room();
        &mut self.buf[self.owned..self.owned + room]
    }

    /// `n` bytes were written at the start of [`Self::spare`]. More than the room is a source's
    /// bug: nothing is added and the reading session reports it.
    pub fn commit(&mut self, n: usize) {
        let room = self.room();
        if n > room {
            self.overrun = Some((n, room));
        } else {
            self.owned += n;
        }
    }

    /// Adds `bytes` to the reply (lent, or copied in by a copying reply). `Err` gives them back
    /// to the caller when they do not fit the room.
    pub fn lend(&mut self, bytes: LentBytes) -> Result<(), LentBytes> {
        let len = bytes.len();
        if len > self.room() {
            return Err(bytes);
        }
        match self.lent.as_deref_mut() {
            Some(lent) => {
                lent.push((self.owned, bytes));
                self.lent_bytes += len;
            }
            None => {
                self.buf[self.owned..self.owned + len].copy_from_slice(bytes.bytes());
                self.owned += len;
            }
        }
        Ok(())
    }

    /// The reply's own bytes.
    #[must_use]
    pub fn owned(&self) -> &[u8] {
        &self.buf[..self.owned]
    }

    /// A source's claim beyond the room, if one was made: (claimed, room).
    pub(crate) fn overrun(&self) -> Option<(usize, usize)> {
        self.overrun
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Lends slices of a fixed buffer and records what was given back.
    #[derive(Default)]
    struct Ledger {
        data: Vec<u8>,
        returned: Mutex<Vec<Loan>>,
    }

    impl Lender for Ledger {
        fn lent(&self, loan: &Loan) -> &[u8] {
            &self.data[loan.addr..loan.addr + loan.len]
        }
        fn give_back(&self, loan: &Loan) {
            self.returned.lock().unwrap().push(*loan);
        }
    }

    fn loan(addr: usize, len: usize) -> Loan {
        Loan {
            key: addr as u64,
            addr,
            len,
        }
    }

    #[test]
    fn lending_reply_places_lent_bytes_between_its_own() {
        let ledger = Arc::new(Ledger {
            data: (0..=255).collect(),
            ..Ledger::default()
        });
        let mut buf = [0u8; 16];
        let mut lent = Vec::new();
        let mut reply = SaveReply::lending(&mut buf, &mut lent);
        reply.spare()[..2].copy_from_slice(&[1, 2]);
        reply.commit(2);
        reply
            .lend(LentBytes::new(ledger.clone(), loan(10, 5)))
            .unwrap();
        assert_eq!((reply.len(), reply.room()), (7, 9));
        reply.spare()[0] = 3;
        reply.commit(1);
        let too_big = reply
            .lend(LentBytes::new(ledger.clone(), loan(0, 9)))
            .unwrap_err();
        drop(too_big);
        assert_eq!(reply.owned(), &[1, 2, 3]);
        assert_eq!(reply.len(), 8);
        assert_eq!(lent.len(), 1);
        assert_eq!(lent[0].0, 2);
        assert_eq!(lent[0].1.bytes(), &[10, 11, 12, 13, 14]);
        assert_eq!(*ledger.returned.lock().unwrap(), vec![loan(0, 9)]);
        lent.clear();
        assert_eq!(ledger.returned.lock().unwrap().len(), 2);
    }

    #[test]
    fn copying_reply_copies_and_gives_back_at_once() {
        let ledger = Arc::new(Ledger {
            data: (0..=255).collect(),
            ..Ledger::default()
        });
        let mut buf = [0u8; 8];
        let mut reply = SaveReply::copying(&mut buf);
        reply
            .lend(LentBytes::new(ledger.clone(), loan(4, 3)))
            .unwrap();
        reply.commit(9);
        assert_eq!(reply.overrun(), Some((9, 5)));
        assert_eq!(reply.owned(), &[4, 5, 6]);
        assert_eq!(*ledger.returned.lock().unwrap(), vec![loan(4, 3)]);
    }
}
