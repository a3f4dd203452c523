//! What the benchmarks read from /proc: a process's CPU time (its own and a `serve` child's)
//! and the load average, so every figure can say what it cost and what else was running.

use anyhow::Context as _;

/// /proc reports CPU time in clock ticks of USER_HZ, 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// utime + stime of `/proc/<pid>/stat` (all threads of the process, including ones that
/// exited), in seconds; `pid` may be `self`. Resolution: 10 ms.
pub fn process_cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is parenthesised and may hold spaces: count after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path} has no command field"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file are the 12th and 13th after the command.
    let tick = |i: usize| -> anyhow::Result<f64> {
        let v: u64 = fields
            .get(i)
            .with_context(|| format!("{path} is too short"))?
            .parse()
            .with_context(|| format!("{path}: field {} is not a number", i + 3))?;
        Ok(v as f64 / USER_HZ)
    };
    Ok(tick(11)? + tick(12)?)
}

/// The 1-minute load average, or NaN where /proc/loadavg cannot be read.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_that_grows_with_work() {
        let before = process_cpu_seconds("self").unwrap();
        // Burn at least a few ticks of CPU (counted in work, not timed).
        let mut x = 0u64;
        let mut after = before;
        while after < before + 0.02 {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            after = process_cpu_seconds("self").unwrap();
        }
        assert!(after > before);
        assert!(process_cpu_seconds("0").is_err());
    }
}
