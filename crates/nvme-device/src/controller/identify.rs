//! Identify: the controller, namespace, list and TP4159 data structures.

use nvme_spec::command::Command;
use nvme_spec::command::IdentifyCdw10;
use nvme_spec::command::IdentifyCdw11;
use nvme_spec::identify::CSI_NVM;
use nvme_spec::identify::Cmic;
use nvme_spec::identify::Cns;
use nvme_spec::identify::IDENTIFY_DATA_SIZE;
use nvme_spec::identify::IdentifyController;
use nvme_spec::identify::IdentifyControllerNvm;
use nvme_spec::identify::IdentifyNamespace;
use nvme_spec::identify::IdentifyNamespaceNvm;
use nvme_spec::identify::LBAMQF_TYPE0;
use nvme_spec::identify::LbaFormat;
use nvme_spec::identify::NamespaceIdentifier;
use nvme_spec::identify::NamespaceList;
use nvme_spec::identify::Oacs;
use nvme_spec::identify::Oaes;
use nvme_spec::identify::Oncs;
use nvme_spec::identify::QueueEntrySize;
use nvme_spec::identify::Trattr;
use nvme_spec::identify::Vwc;
use nvme_spec::identify::encode_namespace_descriptors;
use nvme_spec::identify::pad_ascii;
use nvme_spec::status::Status;
use zerocopy::FromZeros;
use zerocopy::IntoBytes;

use super::Inner;
use super::Role;
use super::aer;
use super::features;
use super::registers;
use super::transfer;
use crate::PCI_VENDOR_ID;
use crate::namespace::BlockSize;
use crate::namespace::Namespace;

/// NSID meaning "every namespace" / "capabilities common to all namespaces".
const BROADCAST_NSID: u32 = 0xFFFF_FFFF;
/// The LBA formats every namespace lists: index 0 is 512-byte blocks, index 1 is 4 KiB blocks.
const LBA_FORMATS: [BlockSize; 2] = [BlockSize::B512, BlockSize::B4096];

/// Identify.
pub(super) fn identify(inner: &Inner, cmd: &Command) -> Result<u32, Status> {
    let cdw10 = IdentifyCdw10::from(cmd.cdw10);
    let cdw11 = IdentifyCdw11::from(cmd.cdw11);
    let page: Vec<u8> = match cdw10.cns() {
        Cns::NAMESPACE => namespace(inner, cmd.nsid)?,
        Cns::CONTROLLER => controller(inner).as_bytes().to_vec(),
        Cns::ACTIVE_NAMESPACE_LIST => active_list(inner, cmd.nsid)?,
        Cns::NAMESPACE_ID_DESCRIPTORS => descriptors(inner, cmd.nsid)?,
        Cns::CSI_NAMESPACE if cdw11.csi() == CSI_NVM => nvm_namespace(inner, cmd.nsid)?,
        Cns::CSI_CONTROLLER if cdw11.csi() == CSI_NVM => nvm_controller().as_bytes().to_vec(),
        Cns::CSI_ACTIVE_NAMESPACE_LIST if cdw11.csi() == CSI_NVM => active_list(inner, cmd.nsid)?,
        Cns::PRIMARY_CONTROLLER_CAPABILITIES if inner.config.role == Role::Primary => {
            crate::sriov::capabilities(inner)
                .ok_or(Status::INVALID_FIELD_IN_COMMAND)?
                .as_bytes()
                .to_vec()
        }
        Cns::SECONDARY_CONTROLLER_LIST if inner.config.role == Role::Primary => {
            crate::sriov::secondary_list(inner, cdw10.cntid())
                .as_bytes()
                .to_vec()
        }
        Cns::SUPPORTED_CONTROLLER_STATE_FORMATS if inner.config.role == Role::Primary => {
            crate::lm::supported_formats(inner)
        }
        _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
    };
    debug_assert_eq!(page.len(), IDENTIFY_DATA_SIZE);
    transfer::to_host(inner, cmd, &page)?;
    Ok(0)
}

/// Identify Controller (CNS 01h).
pub(super) fn controller(inner: &Inner) -> IdentifyController {
    let identity = inner.identity();
    let config = &inner.config;
    let primary = config.role == Role::Primary;
    let mut id = IdentifyController::new_zeroed();
    id.vid = PCI_VENDOR_ID;
    id.ssvid = PCI_VENDOR_ID;
    id.sn = pad_ascii(&identity.serial);
    id.mn = pad_ascii(&identity.model);
    id.fr = pad_ascii(&identity.firmware);
    id.rab = 6;
    id.cmic = Cmic::new().with_multi_controller(true).with_sriov(!primary);
    id.mdts = config.mdts;
    id.cntlid = inner
        .reported_cntlid
        .load(std::sync::atomic::Ordering::Acquire);
    id.ver = registers::VERSION;
    id.oaes = Oaes::new().with_namespace_attribute(true);
    // I/O controller.
    id.cntrltype = 1;
    id.oacs = Oacs::new()
        .with_doorbell_buffer_config(true)
        .with_hmlms(primary)
        .with_virtualization_management(primary);
    id.acl = 3;
    id.aerl = (aer::MAX_OUTSTANDING - 1) as u8;
    // Slot 1 is read-only and the only slot.
    id.frmw = 0b0011;
    // Commands Supported and Effects log; extended Get Log Page (offsets).
    id.lpa = 0b0110;
    id.elpe = (super::log::ERROR_LOG_ENTRIES - 1) as u8;
    id.wctemp = features::WARNING_TEMPERATURE;
    id.cctemp = features::CRITICAL_TEMPERATURE;
    id.sqes = QueueEntrySize::new().with_required(6).with_maximum(6);
    id.cqes = QueueEntrySize::new().with_required(4).with_maximum(4);
    id.nn = inner.namespaces.len() as u32;
    id.oncs = Oncs::new()
        .with_dataset_management(true)
        .with_write_zeroes(true)
        .with_timestamp(true)
        .with_write_zeroes_deallocate(true);
    // A volatile write cache, and Flush with NSID FFFFFFFFh flushes every namespace.
    id.vwc = Vwc::new().with_present(true).with_flush_broadcast(0b11);
    id.subnqn = pad_nqn(&identity.nqn);
    // Power state 0: 25 W, the only one.
    id.psd[0].mp = 2500;
    if primary {
        crate::lm::advertise(&mut id, inner);
    } else {
        id.trattr = Trattr::new();
    }
    id
}

/// The subsystem NQN as a NUL-padded 256-byte field.
fn pad_nqn(nqn: &str) -> [u8; 256] {
    let mut out = [0u8; 256];
    let bytes = nqn.as_bytes();
    let n = bytes.len().min(255);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Identify Namespace (CNS 00h) for a namespace as controller `inner` sees it.
pub(crate) fn namespace_structure(inner: &Inner, ns: &Namespace) -> IdentifyNamespace {
    let mut id = IdentifyNamespace::new_zeroed();
    id.nsze = ns.blocks();
    id.ncap = ns.blocks();
    id.nuse = ns.blocks();
    id.nlbaf = (LBA_FORMATS.len() - 1) as u8;
    id.flbas = LBA_FORMATS
        .iter()
        .position(|b| *b == ns.block_size())
        .unwrap_or(0) as u8;
    id.nmic = u8::from(ns.shared());
    // Deallocated blocks read as zeros, and Write Zeroes may deallocate.
    id.dlfeat = 0b1001;
    let identity = inner.namespace_identity(ns);
    id.nguid = identity.nguid;
    id.eui64 = identity.eui64;
    for (slot, size) in id.lbaf.iter_mut().zip(LBA_FORMATS) {
        *slot = LbaFormat::new_zeroed();
        slot.lbads = size.shift();
    }
    id
}

fn check_nsid(inner: &Inner, nsid: u32) -> Result<Option<&Namespace>, Status> {
    if nsid == 0 || (nsid != BROADCAST_NSID && nsid as usize > inner.namespaces.len()) {
        return Err(Status::INVALID_NAMESPACE_OR_FORMAT);
    }
    Ok(inner.namespace(nsid).map(|ns| ns.as_ref()))
}

fn namespace(inner: &Inner, nsid: u32) -> Result<Vec<u8>, Status> {
    if nsid == BROADCAST_NSID {
        // Capabilities common to all namespaces: the LBA formats.
        let mut id = IdentifyNamespace::new_zeroed();
        id.nlbaf = (LBA_FORMATS.len() - 1) as u8;
        for (slot, size) in id.lbaf.iter_mut().zip(LBA_FORMATS) {
            slot.lbads = size.shift();
        }
        return Ok(id.as_bytes().to_vec());
    }
    Ok(match check_nsid(inner, nsid)? {
        Some(ns) => namespace_structure(inner, ns).as_bytes().to_vec(),
        // A valid NSID that is not attached: all zeros.
        None => vec![0; IDENTIFY_DATA_SIZE],
    })
}

fn active_list(inner: &Inner, after: u32) -> Result<Vec<u8>, Status> {
    if after >= 0xFFFF_FFFE {
        return Err(Status::INVALID_NAMESPACE_OR_FORMAT);
    }
    let ids = inner
        .attached()
        .map(|ns| ns.nsid())
        .filter(|&id| id > after);
    Ok(NamespaceList::from_ids(ids).as_bytes().to_vec())
}

fn descriptors(inner: &Inner, nsid: u32) -> Result<Vec<u8>, Status> {
    let ns = check_nsid(inner, nsid)?.ok_or(Status::INVALID_NAMESPACE_OR_FORMAT)?;
    let identity = inner.namespace_identity(ns);
    let page = encode_namespace_descriptors(&[
        NamespaceIdentifier::Eui64(identity.eui64),
        NamespaceIdentifier::Nguid(identity.nguid),
        NamespaceIdentifier::Uuid(identity.uuid),
        NamespaceIdentifier::Csi(CSI_NVM),
    ])
    .map_err(|_| Status::INTERNAL_ERROR)?;
    Ok(page.to_vec())
}

fn nvm_namespace(inner: &Inner, nsid: u32) -> Result<Vec<u8>, Status> {
    if nsid != BROADCAST_NSID {
        check_nsid(inner, nsid)?;
    }
    Ok(IdentifyNamespaceNvm::new_zeroed().as_bytes().to_vec())
}

/// The NVM command set specific Identify Controller (CNS 06h, CSI 0).
fn nvm_controller() -> IdentifyControllerNvm {
    let mut id = IdentifyControllerNvm::new_zeroed();
    // Dataset Management: up to 256 ranges, no size limits beyond the namespace.
    id.dmrl = 255;
    id.lbamqf = LBAMQF_TYPE0;
    id
}
