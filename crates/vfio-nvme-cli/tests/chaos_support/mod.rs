//! The chaos run: randomized live migrations of one guest's device between two
//! `vfio-nvme serve` processes under the verifying workload, with every kind of [`Fault`]
//! injected. After each fault the guest reads back every block it ever wrote (the workload's
//! verifier against its ledger) and the device must migrate again.

mod cluster;
mod faults;
mod guest;
mod rng;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::time::Duration;
use std::time::Instant;

use cluster::Server;
pub use faults::Fault;
use faults::Outcome;
use guest::DESTINATION_TIMEOUT;
use guest::Guest;
use guest::SOURCE_TIMEOUT;
use guest::note;
use guest::set_source_timeout;
use rng::Rng;

use crate::common::TempDir;

/// What to run: how many migrations, from which seed.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The seed of every random choice.
    pub seed: u64,
    /// Migration attempts to make (faults come on top of the plain ones, most with their own).
    pub migrations: u64,
    /// Percent of the steps after the first round of every fault kind that inject a fault.
    pub fault_percent: u64,
    /// Whether the guest's driver configures shadow doorbells (Doorbell Buffer Config), as
    /// Linux's does, or writes every doorbell register.
    pub shadow_doorbells: bool,
    /// The servers' doorbell delivery (`serve --doorbells`): `trapped` or `shared`.
    pub doorbells: &'static str,
}

impl Plan {
    /// The plan from `CHAOS_SEED` (decimal or 0x-hex; a fresh seed if unset),
    /// `CHAOS_MIGRATIONS` (`default_migrations` if unset) and `CHAOS_SHADOW_DOORBELLS` (`1` or
    /// `0`; if unset, the seed's lowest bit chooses, so a seed repeats its doorbell kind and
    /// the suite's runs cover both) and `CHAOS_DOORBELLS` (`trapped` or `shared`, the servers'
    /// delivery; if unset, the seed's second bit chooses).
    pub fn from_env(default_migrations: u64) -> Self {
        let seed = match std::env::var("CHAOS_SEED") {
            Ok(s) => parse(&s).unwrap_or_else(|| panic!("CHAOS_SEED={s:?} is not a number")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        let migrations = std::env::var("CHAOS_MIGRATIONS").map_or(default_migrations, |s| {
            parse(&s).unwrap_or_else(|| panic!("CHAOS_MIGRATIONS={s:?} is not a number"))
        });
        let shadow_doorbells = match std::env::var("CHAOS_SHADOW_DOORBELLS") {
            Ok(s) => match s.as_str() {
                "1" => true,
                "0" => false,
                _ => panic!("CHAOS_SHADOW_DOORBELLS={s:?} is neither 1 nor 0"),
            },
            Err(_) => seed & 1 == 1,
        };
        let doorbells = match std::env::var("CHAOS_DOORBELLS") {
            Ok(s) => match s.as_str() {
                "trapped" => "trapped",
                "shared" => "shared",
                _ => panic!("CHAOS_DOORBELLS={s:?} is neither trapped nor shared"),
            },
            Err(_) if seed & 2 == 0 => "trapped",
            Err(_) => "shared",
        };
        Self {
            seed,
            migrations,
            fault_percent: 30,
            shadow_doorbells,
            doorbells,
        }
    }
}

fn parse(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What a chaos run did and found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Figures {
    /// The seed.
    pub seed: u64,
    /// Whether the guest used shadow doorbells.
    pub shadow_doorbells: bool,
    /// The servers' doorbell delivery.
    pub doorbells: &'static str,
    /// Migration attempts.
    pub migrations: u64,
    /// Attempts that ended with the device running on the destination.
    pub completed: u64,
    /// Completed attempts whose source failed after the switch-over (its dirty-page report,
    /// logging stop or end of session): the device ran on the destination all the same.
    pub source_release_failures: u64,
    /// Attempts that failed with the device still running on the source.
    pub aborted: u64,
    /// Attempts the orchestrator could not abort (the source was stopped past the timeout of
    /// the abort's own requests), recovered by resuming the source once it answered.
    pub stranded_recovered: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// SIGSTOPs that came after the migration had ended (the server was stopped under the
    /// workload alone).
    pub stops_after_migration: u64,
    /// Destination kills that came too late (the migration had switched over): the
    /// destination was continued instead.
    pub kills_after_switch_over: u64,
    /// Destination restarts after a kill.
    pub restarts: u64,
    /// Writes the workload saw complete.
    pub acknowledged_writes: u64,
    /// Reads the workload checked while it ran.
    pub checked_reads: u64,
    /// Read-backs of every written block (one after each fault and at the end).
    pub readbacks: u64,
    /// Blocks those read-backs checked.
    pub readback_blocks: u64,
    /// Blocks that read back other than the newest acknowledged write (the first one fails the
    /// run, naming it).
    pub lost_writes: u64,
    /// Wall time, seconds.
    pub duration_s: f64,
}

/// The migration attempts' wall time so far, for placing faults inside a migration.
#[derive(Default)]
struct Pace {
    total: Duration,
    count: u32,
}

impl Pace {
    fn record(&mut self, took: Duration) {
        self.total += took;
        self.count += 1;
    }

    /// A typical migration's duration (a guess before the first).
    fn typical(&self) -> Duration {
        if self.count == 0 {
            Duration::from_millis(500)
        } else {
            self.total / self.count
        }
    }
}

/// The run: servers, guest, where the device is, what happened.
struct Chaos {
    servers: [Server; 2],
    /// Index of the server the device lives on.
    here: usize,
    guest: Guest,
    rng: Rng,
    figures: Figures,
    pace: Pace,
    /// The last steps, shown when the run fails.
    history: VecDeque<String>,
}

/// Steps kept in [`Chaos::history`].
const HISTORY: usize = 12;

/// Runs `plan` and returns its figures; panics (naming the seed) on the first lost write,
/// failed command, unmigratable device or server that misbehaves.
pub fn run(plan: &Plan) -> Figures {
    note(&format!(
        "seed {0} ({1} migrations, {2} doorbells, {3} by the servers); repeat with \
         CHAOS_SEED={0} CHAOS_MIGRATIONS={1}",
        plan.seed,
        plan.migrations,
        if plan.shadow_doorbells {
            "shadow"
        } else {
            "register"
        },
        plan.doorbells
    ));
    let started = Instant::now();
    let dir = TempDir::new("chaos");
    let servers = [
        Server::start(&dir, "a", plan.doorbells),
        Server::start(&dir, "b", plan.doorbells),
    ];
    let guest = Guest::start(servers[0].socket(), plan.shadow_doorbells);
    let mut chaos = Chaos {
        servers,
        here: 0,
        guest,
        rng: Rng::new(plan.seed),
        figures: Figures {
            seed: plan.seed,
            shadow_doorbells: plan.shadow_doorbells,
            doorbells: plan.doorbells,
            ..Figures::default()
        },
        pace: Pace::default(),
        history: VecDeque::new(),
    };
    // Every kind once, in random order, then random steps.
    let mut first_round = Fault::ALL.to_vec();
    for i in (1..first_round.len()).rev() {
        first_round.swap(i, chaos.rng.index(i + 1));
    }
    while chaos.figures.migrations < plan.migrations {
        let fault = if let Some(fault) = first_round.pop() {
            Some(fault)
        } else if chaos.rng.below(100) < plan.fault_percent {
            Some(Fault::ALL[chaos.rng.index(Fault::ALL.len())])
        } else {
            None
        };
        match fault {
            None => chaos.plain_migration("a plain migration"),
            Some(fault) => {
                let on = chaos.servers[chaos.here].name();
                chaos.remember(format!("fault {fault:?}, the device on {on}"));
                chaos.inject(fault);
                *chaos
                    .figures
                    .faults
                    .entry(format!("{fault:?}"))
                    .or_default() += 1;
                let after = format!("{fault:?}");
                chaos.guest.verify(&after);
                // Still migratable.
                chaos.plain_migration(&format!("the migration after {after}"));
            }
        }
    }
    chaos.guest.verify("the last migration");
    let mut figures = std::mem::take(&mut chaos.figures);
    let totals = &chaos.guest.totals;
    figures.acknowledged_writes = totals.writes;
    figures.checked_reads = totals.reads;
    figures.readbacks = totals.readbacks;
    figures.readback_blocks = totals.verified_blocks;
    figures.lost_writes = totals.lost;
    figures.duration_s = started.elapsed().as_secs_f64();
    figures
}

impl Drop for Chaos {
    /// On a failure, shows the end of both servers' logs (their directory goes with the run).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let steps: Vec<&str> = self.history.iter().map(String::as_str).collect();
            note(&format!("the last steps:\n{}", steps.join("\n")));
            for server in &self.servers {
                let log = server.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                note(&format!(
                    "the end of server {}'s log:\n{tail}",
                    server.name()
                ));
            }
        }
    }
}

impl Chaos {
    fn other(&self) -> usize {
        1 - self.here
    }

    fn seed(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn warmup(&mut self) -> Duration {
        self.rng.millis(10, 150)
    }

    /// Remembers a step for the failure report.
    fn remember(&mut self, step: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(step);
    }

    /// Counts `outcome` of an attempt, and follows the device.
    fn record(&mut self, outcome: &Outcome, what: &str) {
        self.remember(format!(
            "migration {} ({what}) from {}: {outcome:?}",
            self.figures.migrations + 1,
            self.servers[self.here].name()
        ));
        self.figures.migrations += 1;
        match outcome {
            Outcome::Completed(release_error) => {
                self.figures.completed += 1;
                if let Some(why) = release_error {
                    self.figures.source_release_failures += 1;
                    note(&format!(
                        "{what}: completed, the source's release failed: {why}"
                    ));
                }
                self.here = self.other();
                set_source_timeout(self.guest.orch());
            }
            Outcome::Aborted(why) => {
                self.figures.aborted += 1;
                note(&format!("{what}: aborted: {why}"));
            }
            // The destinations are stopped for at most a second past their timeout, and the
            // orchestrator asks for three timeouts: it must have heard back.
            Outcome::Undecided(why) => panic!(
                "{what} (seed {}): the orchestrator could not tell where the device runs: {why}",
                self.figures.seed
            ),
            Outcome::Stranded(why) => {
                self.figures.stranded_recovered += 1;
                note(&format!("{what}: stranded: {why}"));
                self.guest.recover_source();
            }
        }
    }

    /// A migration with no fault: it must complete.
    fn plain_migration(&mut self, what: &str) {
        let (seed, warmup) = (self.seed(), self.warmup());
        let to = self.servers[self.other()].socket().to_owned();
        let (outcome, took) = self.guest.under_load(seed, warmup, |orch| {
            let started = Instant::now();
            (faults::migrate(orch, &to), started.elapsed())
        });
        assert!(
            matches!(outcome, Outcome::Completed(_)),
            "{what} (seed {}) did not complete: {outcome:?}",
            self.figures.seed
        );
        self.pace.record(took);
        self.record(&outcome, what);
    }

    /// A migration with a SIGSTOP of `target` (the source or the destination) for `hold`,
    /// at a random moment inside a typical migration.
    fn migration_with_stop(&mut self, target: usize, hold: Duration, what: &str) {
        let (seed, warmup) = (self.seed(), self.warmup());
        let typical = self.pace.typical().as_millis() as u64;
        let delay = self.rng.millis(0, typical * 3 / 4);
        let to = self.servers[self.other()].socket().to_owned();
        let pid = self.servers[target].pid();
        let (outcome, during) = self.guest.under_load(seed, warmup, |orch| {
            faults::migrate_with_stop(orch, &to, pid, delay, hold)
        });
        if !during {
            self.figures.stops_after_migration += 1;
        }
        let what = format!("{what}: stopped {delay:?} in for {hold:?}, during: {during}");
        self.record(&outcome, &what);
    }

    fn inject(&mut self, fault: Fault) {
        let what = format!("{fault:?}");
        match fault {
            Fault::StopSourceShort => {
                let hold = self.rng.millis(20, SOURCE_TIMEOUT.as_millis() as u64 / 2);
                self.migration_with_stop(self.here, hold, &what);
            }
            Fault::StopSourceLong => {
                let hold = SOURCE_TIMEOUT + self.rng.millis(200, 1000);
                self.migration_with_stop(self.here, hold, &what);
            }
            Fault::StopSourceInBlackout => {
                let (seed, warmup) = (self.seed(), self.warmup());
                let after = self.rng.millis(0, 30);
                let hold = SOURCE_TIMEOUT + self.rng.millis(200, 1000);
                let to = self.servers[self.other()].socket().to_owned();
                let pid = self.servers[self.here].pid();
                let (outcome, during) = self.guest.under_load(seed, warmup, |orch| {
                    faults::migrate_with_blackout_stop(orch, &to, pid, after, hold)
                });
                if !during {
                    self.figures.stops_after_migration += 1;
                }
                self.record(&outcome, &what);
            }
            Fault::StopDestinationShort => {
                let hold = self.rng.millis(20, SOURCE_TIMEOUT.as_millis() as u64 / 2);
                self.migration_with_stop(self.other(), hold, &what);
            }
            Fault::StopDestinationLong => {
                let hold = DESTINATION_TIMEOUT + self.rng.millis(200, 1000);
                self.migration_with_stop(self.other(), hold, &what);
            }
            Fault::KillDestination => self.kill_destination(&what),
            Fault::DisconnectSource(state) => {
                faults::leave_source_in(self.guest.orch(), state);
                self.guest.reconnect();
            }
            Fault::DisconnectIdle(state) => {
                let (seed, warmup) = (self.seed(), self.warmup());
                let idle = &self.servers[self.other()];
                self.guest.under_load(seed, warmup, |orch| {
                    faults::leave_idle_in(orch, idle, state);
                });
            }
            Fault::Reset(phase) => {
                faults::reset_in(self.guest.orch(), phase);
                self.guest.reinitialise();
            }
            Fault::FlipByte => {
                let (seed, warmup) = (self.seed(), self.warmup());
                let (at, bit) = (self.rng.next_u64(), self.rng.below(8) as u32);
                let idle = &self.servers[self.other()];
                let reason = self.guest.under_load(seed, warmup, |orch| {
                    faults::relay_flipped(orch, idle, at, bit)
                });
                note(&format!("flipped stream refused: {reason}"));
            }
        }
    }

    fn kill_destination(&mut self, what: &str) {
        let (seed, warmup) = (self.seed(), self.warmup());
        let typical = self.pace.typical().as_millis() as u64;
        let delay = self.rng.millis(0, typical / 2);
        let other = self.other();
        let to = self.servers[other].socket().to_owned();
        let pid = self.servers[other].pid();
        let (outcome, killed) = self.guest.under_load(seed, warmup, |orch| {
            faults::migrate_and_kill(orch, &to, pid, delay)
        });
        if killed {
            assert!(
                !matches!(outcome, Outcome::Completed(_)),
                "the destination was killed after the switch-over (seed {}): the kill's \
                 guard is wrong",
                self.figures.seed
            );
            self.servers[other].restart_killed();
            self.figures.restarts += 1;
        } else {
            self.figures.kills_after_switch_over += 1;
        }
        self.record(&outcome, &format!("{what}: {delay:?} in, killed: {killed}"));
    }
}
