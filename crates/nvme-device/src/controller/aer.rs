//! Asynchronous events: outstanding Asynchronous Event Request commands and the events waiting
//! for one; the Asynchronous Event Request and Abort commands; events posted by other threads.
//!
//! An event is reported by completing one outstanding request. After an event that names a log
//! page, further events of the same type stay queued until the host reads that log page without
//! Retain Asynchronous Event set, as the specification requires. Other threads post events into a
//! leaf-locked list that worker 0 collects before each admin step.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use nvme_spec::command::AbortCdw10;
use nvme_spec::command::Command;
use nvme_spec::command::Completion;
use nvme_spec::command::CompletionStatus;
use nvme_spec::features::AsyncEventCompletion;
use nvme_spec::features::AsyncEventConfig;
use nvme_spec::features::AsyncEventInfoError;
use nvme_spec::features::AsyncEventInfoNotice;
use nvme_spec::features::AsyncEventType;
use nvme_spec::log::LogPageId;
use nvme_spec::status::Status;

use super::Inner;
use super::State;
use super::admin_queue::Outcome;

/// Most Asynchronous Event Request commands outstanding at once (AERL + 1).
pub(crate) const MAX_OUTSTANDING: usize = 4;
/// Most undelivered events kept; older ones are dropped beyond this.
pub(crate) const MAX_QUEUED: usize = 64;

/// One asynchronous event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Event type.
    pub event_type: AsyncEventType,
    /// Event information (meaning depends on the type).
    pub info: u8,
    /// The log page the host should read to clear the event (`LogPageId(0)` for none).
    pub log_page: LogPageId,
    /// Event-specific parameter returned in completion dword 1 (e.g. a CDQ identifier).
    pub dw1: u32,
}

impl AsyncEvent {
    /// The host wrote a doorbell value beyond its queue ("Invalid Doorbell Write Value").
    pub fn invalid_doorbell() -> Self {
        Self {
            event_type: AsyncEventType::ERROR,
            info: AsyncEventInfoError::INVALID_DOORBELL_VALUE.0,
            log_page: LogPageId::ERROR_INFORMATION,
            dw1: 0,
        }
    }

    /// The set of attached namespaces or their attributes changed.
    pub fn namespace_changed() -> Self {
        Self {
            event_type: AsyncEventType::NOTICE,
            info: AsyncEventInfoNotice::NAMESPACE_ATTRIBUTE_CHANGED.0,
            log_page: LogPageId::CHANGED_NAMESPACE_LIST,
            dw1: 0,
        }
    }

    /// Completion dword 0 reporting this event.
    pub fn dw0(&self) -> u32 {
        AsyncEventCompletion::new()
            .with_event_type(self.event_type)
            .with_event_info(self.info)
            .with_log_page(self.log_page)
            .into()
    }

    /// Whether the host enabled this kind of event with Asynchronous Event Configuration.
    fn enabled(&self, config: AsyncEventConfig) -> bool {
        match self.event_type {
            AsyncEventType::SMART_HEALTH => u8::from(config.smart()) != 0,
            AsyncEventType::NOTICE => match AsyncEventInfoNotice(self.info) {
                AsyncEventInfoNotice::NAMESPACE_ATTRIBUTE_CHANGED => config.nan(),
                AsyncEventInfoNotice::FIRMWARE_ACTIVATION_STARTING => config.fan(),
                _ => false,
            },
            // Error, one-shot (TP4159 CDQ) and vendor events cannot be disabled.
            _ => true,
        }
    }
}

/// Outstanding requests and queued events of one controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AerState {
    /// Command identifiers of outstanding Asynchronous Event Request commands, oldest first.
    pub outstanding: VecDeque<u16>,
    /// Events not yet reported, oldest first.
    pub queued: VecDeque<AsyncEvent>,
    /// Event types (bit per type) reported and awaiting a read of their log page.
    pub masked: u8,
}

impl AerState {
    /// Adds an event for delivery.
    pub fn queue(&mut self, event: AsyncEvent) {
        if self.queued.contains(&event) {
            return;
        }
        if self.queued.len() == MAX_QUEUED {
            self.queued.pop_front();
        }
        self.queued.push_back(event);
    }

    /// Forgets every request and event (controller reset).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The host read log page `lid` without RAE: unmask the event types that name it.
    pub fn log_read(&mut self, lid: LogPageId) {
        let unmask = match lid {
            LogPageId::ERROR_INFORMATION => Some(AsyncEventType::ERROR),
            LogPageId::SMART_HEALTH => Some(AsyncEventType::SMART_HEALTH),
            LogPageId::CHANGED_NAMESPACE_LIST | LogPageId::FIRMWARE_SLOT => {
                Some(AsyncEventType::NOTICE)
            }
            _ => None,
        };
        if let Some(t) = unmask {
            self.masked &= !(1 << (t.0 & 7));
        }
    }
}

/// Queues `event` from any thread; worker 0 delivers it.
pub(crate) fn post(inner: &Inner, event: AsyncEvent) {
    inner
        .events
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(event);
    inner.events_pending.store(true, Ordering::Release);
    inner.kick();
}

/// Asynchronous Event Request: kept outstanding until an event completes it (or an Abort does),
/// up to [`MAX_OUTSTANDING`] at once.
pub(super) fn request(state: &mut State, cmd: &Command) -> Outcome {
    if state.aer.outstanding.len() >= MAX_OUTSTANDING {
        Outcome::Complete(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED, 0)
    } else {
        state.aer.outstanding.push_back(cmd.cdw0.cid());
        Outcome::Deferred
    }
}

/// Abort: only an outstanding Asynchronous Event Request can still be in flight when the
/// controller reads the Abort (every other command ran to completion when it was fetched). DW0
/// bit 0 is 0 when the command was aborted and 1 when it was not.
pub(super) fn abort(inner: &Inner, state: &mut State, cmd: &Command) -> Result<u32, Status> {
    let cdw10 = AbortCdw10::from(cmd.cdw10);
    if cdw10.sqid() == 0
        && let Some(pos) = state
            .aer
            .outstanding
            .iter()
            .position(|&cid| cid == cdw10.cid())
    {
        state.aer.outstanding.remove(pos);
        let mut aborted = Command::default();
        aborted.cdw0 = aborted.cdw0.with_cid(cdw10.cid());
        state
            .q
            .complete(inner, 0, 0, &aborted, Status::COMMAND_ABORT_REQUESTED, 0);
        return Ok(0);
    }
    Ok(1)
}

/// Moves the events other threads posted since the last call into the delivery queue, with
/// `state` held (worker 0 before each admin step; a state capture, for which they are part of the
/// state). One atomic swap when nothing was posted.
pub(super) fn collect_posted(inner: &Inner, state: &mut State) {
    if inner.events_pending.swap(false, Ordering::AcqRel) {
        let events = std::mem::take(
            &mut *inner
                .events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for event in events {
            state.aer.queue(event);
        }
    }
}

/// Drops the events other threads posted and nobody collected yet (a state restore replaces
/// them with the source's).
pub(super) fn discard_posted(inner: &Inner) {
    inner
        .events
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clear();
    inner.events_pending.store(false, Ordering::Release);
}

/// Completes outstanding requests with queued events while both exist and the admin completion
/// queue has room. Returns whether anything was delivered.
pub(super) fn deliver(inner: &Inner, state: &mut State) -> bool {
    let config = state.features.async_event_config;
    let mut delivered = false;
    loop {
        if state.aer.outstanding.is_empty() {
            break;
        }
        let masked = state.aer.masked;
        let Some(index) = state
            .aer
            .queued
            .iter()
            .position(|e| e.enabled(config) && masked & (1 << (e.event_type.0 & 7)) == 0)
        else {
            break;
        };
        let room = match state.q.cqs[0].as_mut() {
            Some(cq) => {
                if cq.update_head(inner.doorbells.cq_head(0)).is_err() {
                    break;
                }
                cq.free_slots()
            }
            None => break,
        };
        if room == 0 {
            break;
        }
        let (Some(event), Some(cid)) = (
            state.aer.queued.remove(index),
            state.aer.outstanding.pop_front(),
        ) else {
            break;
        };
        if event.log_page != LogPageId(0) {
            state.aer.masked |= 1 << (event.event_type.0 & 7);
        }
        let sqhd = state.q.sqs[0].as_ref().map_or(0, |q| q.head as u16);
        state.q.post(
            inner,
            0,
            Completion {
                dw0: event.dw0(),
                dw1: event.dw1,
                sqhd,
                sqid: 0,
                cid,
                status: CompletionStatus::new_with(Status::SUCCESS, false),
            },
        );
        delivered = true;
    }
    // Drop events the host disabled, so they do not pile up.
    state.aer.queued.retain(|e| e.enabled(config));
    delivered
}
