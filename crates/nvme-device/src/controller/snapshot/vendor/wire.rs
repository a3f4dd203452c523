//! The field primitives of the vendor state's body: little-endian integers, 0/1 flags, counted
//! strings and list counts, written by `encode` and read back, field by named field, by `decode`.

use super::MAX_LIST;
use super::VendorStateError;

/// Appends little-endian fields.
pub(super) struct Writer(pub(super) Vec<u8>);

impl Writer {
    pub(super) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(super) fn flag(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    pub(super) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(super) fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    /// A list count; lists are bounded by construction (queues, vectors, log entries).
    pub(super) fn count(&mut self, n: usize) {
        self.u16(n.min(MAX_LIST) as u16);
    }
    pub(super) fn str(&mut self, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        self.u16(bytes.len() as u16);
        self.bytes(bytes);
    }
}

/// Reads little-endian fields, naming the field on failure.
pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(
        &mut self,
        n: usize,
        field: &'static str,
    ) -> Result<&'a [u8], VendorStateError> {
        if self.0.len() < n {
            return Err(VendorStateError::Truncated { field });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(super) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], VendorStateError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, VendorStateError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(super) fn flag(&mut self, field: &'static str) -> Result<bool, VendorStateError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(VendorStateError::BadFlag { field, value }),
        }
    }
    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, VendorStateError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, VendorStateError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, VendorStateError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// A list count, checked against `max`.
    pub(super) fn count(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<usize, VendorStateError> {
        let count = usize::from(self.u16(field)?);
        if count > max {
            return Err(VendorStateError::TooMany { field, count, max });
        }
        Ok(count)
    }
    pub(super) fn str(&mut self, field: &'static str) -> Result<String, VendorStateError> {
        let len = usize::from(self.u16(field)?);
        let bytes = self.take(len, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| VendorStateError::BadString { field })
    }
}
