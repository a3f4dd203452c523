//! Get Features and Set Features: the feature values of one controller.

use std::time::Duration;

use nvme_spec::command::Command;
use nvme_spec::command::GetFeaturesCdw10;
use nvme_spec::command::SetFeaturesCdw10;
use nvme_spec::features::AsyncEventConfig;
use nvme_spec::features::ErrorRecovery;
use nvme_spec::features::FeatureCapabilities;
use nvme_spec::features::FeatureId;
use nvme_spec::features::InterruptVectorConfig;
use nvme_spec::features::NumberOfQueuesAllocated;
use nvme_spec::features::NumberOfQueuesRequest;
use nvme_spec::features::PowerManagement;
use nvme_spec::features::Select;
use nvme_spec::features::TemperatureThreshold;
use nvme_spec::features::Timestamp;
use nvme_spec::status::Status;
use zerocopy::IntoBytes;

use super::ControllerConfig;
use super::Inner;
use super::State;
use super::snapshot::vendor::FeatureValues;
use super::snapshot::vendor::TimestampValue;
use super::transfer;

/// The warning composite temperature threshold reported in Identify (WCTEMP), in kelvin, and
/// the default over-temperature threshold.
pub(crate) const WARNING_TEMPERATURE: u16 = 343;
/// The critical composite temperature threshold reported in Identify (CCTEMP), in kelvin.
pub(crate) const CRITICAL_TEMPERATURE: u16 = 358;

/// The current value of every supported feature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Features {
    /// 01h Arbitration (CDW11 as written).
    pub arbitration: u32,
    /// 02h Power Management (CDW11 as written).
    pub power_management: u32,
    /// 04h composite temperature over-threshold, kelvin.
    pub over_temperature: u16,
    /// 04h composite temperature under-threshold, kelvin.
    pub under_temperature: u16,
    /// 05h Error Recovery (CDW11 as written).
    pub error_recovery: u32,
    /// 06h Volatile Write Cache enable.
    pub write_cache: bool,
    /// 07h Number of Queues allocated, 0's based (NSQA, NCQA).
    pub queues: (u16, u16),
    /// Whether Number of Queues was set since the last reset (it may be set only once).
    pub queues_set: bool,
    /// 08h Interrupt Coalescing (CDW11 as written).
    pub interrupt_coalescing: u32,
    /// 09h Coalescing Disable per interrupt vector.
    pub coalescing_disabled: Vec<bool>,
    /// 0Ah Write Atomicity Normal: Disable Normal.
    pub write_atomicity_disable_normal: bool,
    /// 0Bh Asynchronous Event Configuration.
    pub async_event_config: AsyncEventConfig,
    /// 0Eh Timestamp, once the host set it.
    pub timestamp: Option<HostTimestamp>,
    /// 0Fh Keep Alive Timer, milliseconds.
    pub keep_alive: u32,
}

/// A Timestamp the host set. It counts with the controller's clock, which stops while the
/// controller is suspended; Synch then tells the host it may have stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostTimestamp {
    /// The value the host set, in milliseconds.
    pub set_to: u64,
    /// The controller's running time when it was set.
    pub set_at: Duration,
    /// Whether the controller's clock stopped since (Synch).
    pub stopped: bool,
}

impl HostTimestamp {
    /// Its value, in milliseconds, when the controller has been running for `uptime`.
    fn now(&self, uptime: Duration) -> u64 {
        let counted = uptime.saturating_sub(self.set_at).as_millis() as u64;
        self.set_to.wrapping_add(counted) & ((1 << 48) - 1)
    }
}

impl Features {
    /// The defaults after a reset of a controller with `config` that offers `queue_pairs` I/O
    /// queue pairs.
    pub fn new(config: &ControllerConfig, queue_pairs: u16) -> Self {
        let max = queue_pairs.saturating_sub(1);
        Self {
            arbitration: 0,
            power_management: 0,
            over_temperature: WARNING_TEMPERATURE,
            under_temperature: 0,
            error_recovery: 0,
            write_cache: true,
            queues: (max, max),
            queues_set: false,
            interrupt_coalescing: 0,
            coalescing_disabled: vec![false; usize::from(config.msix_vectors)],
            write_atomicity_disable_normal: false,
            async_event_config: AsyncEventConfig::new(),
            timestamp: None,
            keep_alive: 0,
        }
    }
}

impl Features {
    /// The controller's clock stopped (a TP4159 suspension): a Timestamp the host set no longer
    /// counts continuously.
    pub(super) fn clock_stopped(&mut self) {
        if let Some(t) = &mut self.timestamp {
            t.stopped = true;
        }
    }

    /// The values as saved in our vendor-specific migration state, for a controller that has
    /// been running for `uptime`: the Timestamp is its value then.
    pub(super) fn to_values(&self, uptime: Duration) -> FeatureValues {
        FeatureValues {
            arbitration: self.arbitration,
            power_management: self.power_management,
            over_temperature: self.over_temperature,
            under_temperature: self.under_temperature,
            error_recovery: self.error_recovery,
            write_cache: self.write_cache,
            queues: self.queues,
            queues_set: self.queues_set,
            interrupt_coalescing: self.interrupt_coalescing,
            coalescing_disabled: self.coalescing_disabled.clone(),
            write_atomicity_disable_normal: self.write_atomicity_disable_normal,
            async_event_config: self.async_event_config.into(),
            timestamp: self.timestamp.map(|t| TimestampValue {
                ms: t.now(uptime),
                stopped: t.stopped,
            }),
            keep_alive: self.keep_alive,
        }
    }

    /// Features restored from saved `values` on a controller with `config` (whose vector count
    /// the caller checked can hold the saved one) that has been running for `uptime`.
    pub(super) fn from_values(
        values: &FeatureValues,
        config: &ControllerConfig,
        uptime: Duration,
    ) -> Self {
        let mut coalescing_disabled = values.coalescing_disabled.clone();
        coalescing_disabled.resize(usize::from(config.msix_vectors), false);
        Self {
            arbitration: values.arbitration,
            power_management: values.power_management,
            over_temperature: values.over_temperature,
            under_temperature: values.under_temperature,
            error_recovery: values.error_recovery,
            write_cache: values.write_cache,
            queues: values.queues,
            queues_set: values.queues_set,
            interrupt_coalescing: values.interrupt_coalescing,
            coalescing_disabled,
            write_atomicity_disable_normal: values.write_atomicity_disable_normal,
            async_event_config: AsyncEventConfig::from(values.async_event_config),
            timestamp: values.timestamp.map(|t| HostTimestamp {
                set_to: t.ms,
                set_at: uptime,
                stopped: t.stopped,
            }),
            keep_alive: values.keep_alive,
        }
    }
}

/// The features this controller supports for Get Features / Set Features.
fn supported(fid: FeatureId) -> bool {
    matches!(
        fid,
        FeatureId::ARBITRATION
            | FeatureId::POWER_MANAGEMENT
            | FeatureId::TEMPERATURE_THRESHOLD
            | FeatureId::ERROR_RECOVERY
            | FeatureId::VOLATILE_WRITE_CACHE
            | FeatureId::NUMBER_OF_QUEUES
            | FeatureId::INTERRUPT_COALESCING
            | FeatureId::INTERRUPT_VECTOR_CONFIG
            | FeatureId::WRITE_ATOMICITY_NORMAL
            | FeatureId::ASYNC_EVENT_CONFIG
            | FeatureId::TIMESTAMP
            | FeatureId::KEEP_ALIVE_TIMER
    )
}

/// The Timestamp feature's 8-byte value for a controller that has been running for `uptime`.
fn timestamp_now(features: &Features, uptime: Duration) -> Timestamp {
    match features.timestamp {
        Some(t) => Timestamp::new()
            .with_timestamp(t.now(uptime))
            .with_synch(t.stopped)
            .with_origin(1),
        None => Timestamp::new(),
    }
}

/// Get Features.
pub(super) fn get(inner: &Inner, state: &State, cmd: &Command) -> Result<u32, Status> {
    let cdw10 = GetFeaturesCdw10::from(cmd.cdw10);
    let fid = cdw10.fid();
    if !supported(fid) {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    let defaults;
    let features = match cdw10.sel() {
        Select::CURRENT => &state.features,
        // Nothing is saveable, so the saved value is the default.
        Select::DEFAULT | Select::SAVED => {
            defaults = Features::new(&inner.config, inner.offered_queue_pairs());
            &defaults
        }
        Select::SUPPORTED_CAPABILITIES => {
            return Ok(FeatureCapabilities::new().with_changeable(true).into());
        }
        _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
    };
    Ok(match fid {
        FeatureId::ARBITRATION => features.arbitration,
        FeatureId::POWER_MANAGEMENT => features.power_management,
        FeatureId::TEMPERATURE_THRESHOLD => {
            let request = TemperatureThreshold::from(cmd.cdw11);
            if request.tmpsel() != 0 {
                return Err(Status::INVALID_FIELD_IN_COMMAND);
            }
            let value = match request.thsel() {
                0 => features.over_temperature,
                1 => features.under_temperature,
                _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
            };
            request.with_tmpth(value).into()
        }
        FeatureId::ERROR_RECOVERY => features.error_recovery,
        FeatureId::VOLATILE_WRITE_CACHE => u32::from(features.write_cache),
        FeatureId::NUMBER_OF_QUEUES => NumberOfQueuesAllocated::new()
            .with_nsqa(features.queues.0)
            .with_ncqa(features.queues.1)
            .into(),
        FeatureId::INTERRUPT_COALESCING => features.interrupt_coalescing,
        FeatureId::INTERRUPT_VECTOR_CONFIG => {
            let iv = InterruptVectorConfig::from(cmd.cdw11).iv();
            let cd = *features
                .coalescing_disabled
                .get(usize::from(iv))
                .ok_or(Status::INVALID_FIELD_IN_COMMAND)?;
            InterruptVectorConfig::new().with_iv(iv).with_cd(cd).into()
        }
        FeatureId::WRITE_ATOMICITY_NORMAL => u32::from(features.write_atomicity_disable_normal),
        FeatureId::ASYNC_EVENT_CONFIG => features.async_event_config.into(),
        FeatureId::TIMESTAMP => {
            let value = timestamp_now(features, inner.uptime());
            transfer::to_host(inner, cmd, value.as_bytes())?;
            0
        }
        FeatureId::KEEP_ALIVE_TIMER => features.keep_alive,
        _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
    })
}

/// Set Features.
pub(super) fn set(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let cdw10 = SetFeaturesCdw10::from(cmd.cdw10);
    let fid = cdw10.fid();
    if !supported(fid) {
        return Err(Status::INVALID_FIELD_IN_COMMAND);
    }
    if cdw10.sv() {
        return Err(Status::FEATURE_NOT_SAVEABLE);
    }
    let features = &mut state.features;
    let cdw11 = cmd.cdw11;
    match fid {
        FeatureId::ARBITRATION => features.arbitration = cdw11,
        FeatureId::POWER_MANAGEMENT => {
            // Only power state 0 exists (NPSS = 0).
            if PowerManagement::from(cdw11).ps() != 0 {
                return Err(Status::INVALID_FIELD_IN_COMMAND);
            }
            features.power_management = cdw11;
        }
        FeatureId::TEMPERATURE_THRESHOLD => {
            let request = TemperatureThreshold::from(cdw11);
            if request.tmpsel() != 0 {
                return Err(Status::INVALID_FIELD_IN_COMMAND);
            }
            match request.thsel() {
                0 => features.over_temperature = request.tmpth(),
                1 => features.under_temperature = request.tmpth(),
                _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
            }
        }
        FeatureId::ERROR_RECOVERY => {
            // Deallocated or Unwritten Logical Block errors are not supported (NSFEAT.DAE = 0).
            if ErrorRecovery::from(cdw11).dulbe() {
                return Err(Status::INVALID_FIELD_IN_COMMAND);
            }
            features.error_recovery = cdw11;
        }
        FeatureId::VOLATILE_WRITE_CACHE => features.write_cache = cdw11 & 1 != 0,
        FeatureId::NUMBER_OF_QUEUES => {
            let request = NumberOfQueuesRequest::from(cdw11);
            if request.nsqr() == u16::MAX || request.ncqr() == u16::MAX {
                return Err(Status::INVALID_FIELD_IN_COMMAND);
            }
            // Only before any I/O queue exists: afterwards the allocation may no longer change
            // (whether or not the host set it before creating its queues).
            let io_queues_exist = inner.lock_workers().iter().any(|w| {
                w.q.sqs.iter().any(Option::is_some) || w.q.cqs.iter().any(Option::is_some)
            });
            if io_queues_exist {
                return Err(Status::COMMAND_SEQUENCE_ERROR);
            }
            // "The value allocated shall not change between resets": a second request before
            // queue creation reports the first allocation again.
            if !features.queues_set {
                let max = inner.offered_queue_pairs().saturating_sub(1);
                features.queues = (request.nsqr().min(max), request.ncqr().min(max));
                features.queues_set = true;
            }
            return Ok(NumberOfQueuesAllocated::new()
                .with_nsqa(features.queues.0)
                .with_ncqa(features.queues.1)
                .into());
        }
        FeatureId::INTERRUPT_COALESCING => features.interrupt_coalescing = cdw11,
        FeatureId::INTERRUPT_VECTOR_CONFIG => {
            let request = InterruptVectorConfig::from(cdw11);
            let slot = features
                .coalescing_disabled
                .get_mut(usize::from(request.iv()))
                .ok_or(Status::INVALID_FIELD_IN_COMMAND)?;
            *slot = request.cd();
        }
        FeatureId::WRITE_ATOMICITY_NORMAL => {
            features.write_atomicity_disable_normal = cdw11 & 1 != 0
        }
        FeatureId::ASYNC_EVENT_CONFIG => {
            features.async_event_config = AsyncEventConfig::from(cdw11)
        }
        FeatureId::TIMESTAMP => {
            let mut raw = [0u8; 8];
            transfer::from_host(inner, cmd, &mut raw)?;
            let value = Timestamp::from(u64::from_le_bytes(raw)).timestamp();
            features.timestamp = Some(HostTimestamp {
                set_to: value,
                set_at: inner.uptime(),
                stopped: false,
            });
        }
        FeatureId::KEEP_ALIVE_TIMER => features.keep_alive = cdw11,
        _ => return Err(Status::INVALID_FIELD_IN_COMMAND),
    }
    Ok(0)
}
