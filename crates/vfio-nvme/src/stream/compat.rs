//! Whether a destination device can take over the state of the device a stream came from.

use super::error::StreamError;
use super::header::DeviceGeometry;
use super::header::StreamHeader;

/// Checks that `destination` can become the device `source` describes: the same namespaces
/// (nsid, block size, size in blocks, shared or local), and at least the source's I/O queue
/// pairs, queue entries, MSI-X vectors and transfer size, because the guest may use all of them.
pub fn check_compatible(
    source: &StreamHeader,
    destination: &DeviceGeometry,
) -> Result<(), StreamError> {
    let src = &source.geometry;
    at_least(
        "I/O queue pairs",
        src.io_queue_pairs.into(),
        destination.io_queue_pairs.into(),
    )?;
    at_least(
        "maximum queue entries (MQES, zero-based)",
        src.mqes.into(),
        destination.mqes.into(),
    )?;
    at_least(
        "MSI-X vectors",
        src.msix_vectors.into(),
        destination.msix_vectors.into(),
    )?;
    let mdts_ok = destination.mdts == 0 || (src.mdts != 0 && destination.mdts >= src.mdts);
    if !mdts_ok {
        return Err(StreamError::MdtsTooSmall {
            source_mdts: src.mdts,
            destination_mdts: destination.mdts,
        });
    }
    if src.namespaces.len() != destination.namespaces.len() {
        return Err(StreamError::NamespaceCountMismatch {
            source_count: src.namespaces.len(),
            destination_count: destination.namespaces.len(),
        });
    }
    for ns in &src.namespaces {
        let dst = destination
            .namespace(ns.nsid)
            .ok_or(StreamError::NamespaceMissing { nsid: ns.nsid })?;
        if (dst.lba_shift, dst.blocks) != (ns.lba_shift, ns.blocks) {
            return Err(StreamError::NamespaceGeometryMismatch {
                nsid: ns.nsid,
                source_blocks: ns.blocks,
                source_block_size: ns.block_size(),
                destination_blocks: dst.blocks,
                destination_block_size: dst.block_size(),
            });
        }
        if dst.shared != ns.shared {
            return Err(StreamError::NamespaceSharingMismatch {
                nsid: ns.nsid,
                source_shared: ns.shared,
            });
        }
    }
    Ok(())
}

fn at_least(
    limit: &'static str,
    source_value: u64,
    destination_value: u64,
) -> Result<(), StreamError> {
    if destination_value < source_value {
        return Err(StreamError::LimitTooSmall {
            limit,
            source_value,
            destination_value,
        });
    }
    Ok(())
}
