//! [`FromReply`]: picks the expected body out of a decoded [`Reply`], so each request method
//! gets its own reply type without matching on the enum itself.

use crate::access::RegionReadReply;
use crate::access::RegionWriteMultiReply;
use crate::access::RegionWriteReply;
use crate::device::DeviceInfo;
use crate::device::DeviceReset;
use crate::dma::DmaMapReply;
use crate::dma::DmaUnmapReply;
use crate::feature::DeviceFeature;
use crate::irq::IrqInfo;
use crate::irq::IrqSetReply;
use crate::message::Reply;
use crate::migration::MigDataReadReply;
use crate::migration::MigDataWriteReply;
use crate::region::RegionInfoReply;
use crate::version::Version;

/// A reply body that is one variant of [`Reply`].
pub(crate) trait FromReply: Sized {
    /// The body if `reply` is this variant.
    fn from_reply(reply: Reply) -> Option<Self>;
}

macro_rules! from_reply {
    ($($variant:ident($ty:ty),)*) => {
        $(
            impl FromReply for $ty {
                fn from_reply(reply: Reply) -> Option<Self> {
                    match reply {
                        Reply::$variant(body) => Some(body),
                        _ => None,
                    }
                }
            }
        )*
    };
}

from_reply! {
    Version(Version),
    DmaMap(DmaMapReply),
    DmaUnmap(DmaUnmapReply),
    DeviceGetInfo(DeviceInfo),
    DeviceGetRegionInfo(RegionInfoReply),
    DeviceGetIrqInfo(IrqInfo),
    DeviceSetIrqs(IrqSetReply),
    RegionRead(RegionReadReply),
    RegionWrite(RegionWriteReply),
    DeviceReset(DeviceReset),
    RegionWriteMulti(RegionWriteMultiReply),
    DeviceFeature(DeviceFeature),
    MigDataRead(MigDataReadReply),
    MigDataWrite(MigDataWriteReply),
}
