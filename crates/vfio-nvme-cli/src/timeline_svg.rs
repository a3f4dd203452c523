//! An SVG timeline of a workload run: IOPS (linear, left axis) and p99 latency (logarithmic,
//! right axis, so one spike does not flatten the rest) over time, with each migration's window
//! shaded and labelled with its direction (A → B, servers lettered in order of appearance) and
//! its figures (blackout, total, longest stall). Tick labels are human: `250k` IOPS, `1 ms`.

use std::fmt::Write as _;
use std::path::Path;

use crate::workload_cmd::RunOutcome;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 70.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A count with a k or M suffix: `950`, `12.5k`, `250k`, `1.2M`.
pub fn count_label(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    format!("{}{suffix}", trim(scaled))
}

/// A duration in microseconds as µs, ms or s: `50 µs`, `1.5 ms`, `2 s`.
pub fn micros_label(us: f64) -> String {
    match us.abs() {
        v if v >= 1e6 => format!("{} s", trim(us / 1e6)),
        v if v >= 1e3 => format!("{} ms", trim(us / 1e3)),
        _ => format!("{} µs", trim(us)),
    }
}

/// A time in seconds as ms below one second, else s: `500 ms`, `1.5 s`.
pub fn seconds_label(s: f64) -> String {
    if s != 0.0 && s.abs() < 1.0 {
        format!("{} ms", trim(s * 1e3))
    } else {
        format!("{} s", trim(s))
    }
}

/// At most three significant digits, no trailing zeros: `12.5`, `250`, `1.25`.
fn trim(value: f64) -> String {
    let decimals = match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

/// A step of 1, 2 or 5 times a power of ten that cuts `span` into about `parts` pieces.
fn nice_step(span: f64, parts: f64) -> f64 {
    let raw = (span / parts).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// The decades `10^lo ..= 10^hi` (in µs) a logarithmic latency axis spans: from the decade
/// below the smallest value to the one above the largest.
fn decades(values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (min, max) = values
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !min.is_finite() {
        return (0, 3);
    }
    let lo = min.log10().floor() as i32;
    let hi = (max.log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

/// Letters the servers in order of appearance (`A`, `B`, …) from the migrations' endpoints.
fn server_letters(outcome: &RunOutcome) -> Vec<(&Path, char)> {
    let mut letters: Vec<(&Path, char)> = Vec::new();
    for m in &outcome.migrations {
        for path in [m.from.as_path(), m.to.as_path()] {
            if !letters.iter().any(|(p, _)| *p == path) {
                let letter = (b'A' + (letters.len() % 26) as u8) as char;
                letters.push((path, letter));
            }
        }
    }
    letters
}

/// Renders `outcome` as a standalone SVG document.
pub fn render(outcome: &RunOutcome, title: &str) -> String {
    let timeline = &outcome.workload.timeline;
    let span_s = timeline
        .last()
        .map_or(1.0, |b| (b.start_ms + b.duration_ms) / 1000.0)
        .max(0.1);
    let iops_step = nice_step(timeline.iter().map(|b| b.iops).fold(1.0, f64::max), 5.0);
    let max_iops =
        (timeline.iter().map(|b| b.iops).fold(1.0, f64::max) / iops_step).ceil() * iops_step;
    let (lat_lo, lat_hi) = decades(timeline.iter().map(|b| b.p99_us));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bottom = TOP + plot_h;
    let x = |s: f64| LEFT + s / span_s * plot_w;
    let y_iops = |v: f64| bottom - v / max_iops * plot_h;
    let y_lat = |us: f64| {
        let frac = (us.log10() - f64::from(lat_lo)) / f64::from(lat_hi - lat_lo);
        bottom - frac.clamp(0.0, 1.0) * plot_h
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );

    // Migration windows, labelled with their direction and figures.
    let letters = server_letters(outcome);
    let letter = |path: &Path| {
        letters
            .iter()
            .find(|(p, _)| *p == path)
            .map_or('?', |(_, l)| *l)
    };
    for m in &outcome.migrations {
        let (x0, x1) = (x(m.start_s), x(m.end_s).max(x(m.start_s) + 2.0));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#ffd54f" fill-opacity="0.45"/>"##,
            x1 - x0
        );
        // The throttled stretch of pre-copy, darker.
        if m.throttled_ms > 0.0 {
            let switch_s = m.start_s + m.precopy_ms / 1e3;
            let (t0, t1) = (x(switch_s - m.throttled_ms / 1e3), x(switch_s));
            let _ = writeln!(
                svg,
                r##"<rect x="{t0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#ff8f00" fill-opacity="0.25"/>"##,
                (t1 - t0).max(1.0)
            );
        }
        let lines = [
            format!("{} → {}", letter(&m.from), letter(&m.to)),
            format!(
                "blackout {} (expected {})",
                micros_label(m.blackout_ms * 1e3),
                micros_label(m.expected_downtime_ms * 1e3)
            ),
            format!("total {}", micros_label(m.total_ms * 1e3)),
            format!("stall {}", micros_label(m.longest_stall_ms * 1e3)),
            format!(
                "{} rounds, stream {:.0}, dirty {:.0} MB/s",
                m.precopy_rounds, m.stream_mb_s, m.dirty_mb_s
            ),
            format!("throttle {} %", m.throttle_percent),
            m.switch_reason
                .map_or_else(String::new, |r| format!("{r:?}").to_lowercase()),
        ];
        for (i, line) in lines.iter().enumerate() {
            let weight = if i == 0 { "bold" } else { "normal" };
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#6d5500" font-weight="{weight}">{}</text>"##,
                x0 + 4.0,
                TOP + 14.0 + 14.0 * i as f64,
                escape(line)
            );
        }
    }

    // Axes, grid and ticks.
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{0}" y2="{bottom}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333"/><line x1="{0}" y1="{TOP}" x2="{0}" y2="{bottom}" stroke="#333"/>"##,
        LEFT + plot_w
    );
    let mut tick = 0.0;
    while tick <= max_iops + iops_step / 2.0 {
        let yy = y_iops(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#1565c0">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            count_label(tick)
        );
        tick += iops_step;
    }
    for decade in lat_lo..=lat_hi {
        let us = 10f64.powi(decade);
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#e65100">{}</text>"##,
            LEFT + plot_w + 6.0,
            y_lat(us) + 4.0,
            micros_label(us)
        );
    }
    let time_step = nice_step(span_s, 8.0);
    let mut t = 0.0;
    while t <= span_s + time_step / 1e6 {
        let xx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{bottom}" x2="{xx:.1}" y2="{:.1}" stroke="#333"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            bottom + 4.0,
            bottom + 18.0,
            seconds_label(t)
        );
        t += time_step;
    }
    let legend = letters
        .iter()
        .map(|(path, l)| format!("{l} = {}", path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" fill="#1565c0">IOPS</text><text x="{:.1}" y="{:.1}" text-anchor="middle">time</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#e65100">p99 latency (log scale)</text><text x="{LEFT}" y="{:.1}" fill="#555" font-size="11">{}</text>"##,
        bottom + 36.0,
        LEFT + plot_w / 2.0,
        bottom + 36.0,
        LEFT + plot_w,
        bottom + 36.0,
        HEIGHT - 8.0,
        escape(&legend)
    );

    // IOPS as one line; latency as segments, broken where an interval had no completion.
    let mid = |b: &nvme_host::workload::Bucket| (b.start_ms + b.duration_ms / 2.0) / 1000.0;
    let iops_points: Vec<String> = timeline
        .iter()
        .map(|b| format!("{:.1},{:.1}", x(mid(b)), y_iops(b.iops)))
        .collect();
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{}"/>"##,
        iops_points.join(" ")
    );
    for segment in timeline.split(|b| b.p99_us <= 0.0) {
        if segment.is_empty() {
            continue;
        }
        let points: Vec<String> = segment
            .iter()
            .map(|b| format!("{:.1},{:.1}", x(mid(b)), y_lat(b.p99_us)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="#e65100" stroke-width="1.5" stroke-dasharray="4 2" points="{}"/>"##,
            points.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_human() {
        assert_eq!(count_label(0.0), "0");
        assert_eq!(count_label(950.0), "950");
        assert_eq!(count_label(12_500.0), "12.5k");
        assert_eq!(count_label(659_503.0), "660k");
        assert_eq!(count_label(1_200_000.0), "1.2M");
        assert_eq!(micros_label(50.0), "50 µs");
        assert_eq!(micros_label(1_500.0), "1.5 ms");
        assert_eq!(micros_label(712_822.0), "713 ms");
        assert_eq!(micros_label(2_000_000.0), "2 s");
        assert_eq!(seconds_label(0.0), "0 s");
        assert_eq!(seconds_label(0.5), "500 ms");
        assert_eq!(seconds_label(1.5), "1.5 s");
    }

    #[test]
    fn steps_are_one_two_or_five() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(700_000.0, 5.0), 200_000.0);
        assert_eq!(nice_step(3.2, 8.0), 0.5);
        assert_eq!(nice_step(1.0, 10.0), 0.1);
    }

    #[test]
    fn the_latency_axis_spans_whole_decades() {
        // A 200 ms spike among 300 µs values: 100 µs .. 1 s, four decades, so the ordinary
        // values sit a quarter of the way up instead of on the floor.
        assert_eq!(decades([300.0, 350.0, 200_000.0, 0.0].into_iter()), (2, 6));
        assert_eq!(decades([0.0].into_iter()), (0, 3));
        assert_eq!(decades([100.0].into_iter()), (2, 3));
    }
}
