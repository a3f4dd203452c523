//! An SVG timeline of a workload run: IOPS and p99 latency over time, with each migration's
//! window shaded and its blackout labelled.

use std::fmt::Write as _;

use crate::workload_cmd::RunOutcome;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders `outcome` as a standalone SVG document.
pub fn render(outcome: &RunOutcome, title: &str) -> String {
    let timeline = &outcome.workload.timeline;
    let span_s = timeline
        .last()
        .map_or(1.0, |b| (b.start_ms + b.duration_ms) / 1000.0)
        .max(0.1);
    let max_iops = timeline.iter().map(|b| b.iops).fold(1.0, f64::max) * 1.1;
    let max_lat = timeline.iter().map(|b| b.p99_us).fold(1.0, f64::max) * 1.1;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |s: f64| LEFT + s / span_s * plot_w;
    let y_iops = |v: f64| TOP + plot_h - v / max_iops * plot_h;
    let y_lat = |v: f64| TOP + plot_h - v / max_lat * plot_h;
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
    for m in &outcome.migrations {
        let (x0, x1) = (x(m.start_s), x(m.end_s).max(x(m.start_s) + 2.0));
        let _ = writeln!(
            svg,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#ffd54f" fill-opacity="0.45"/>"##,
            x1 - x0
        );
        let label = format!(
            "migration: blackout {:.1} ms, stall {:.0} ms",
            m.blackout_ms, m.longest_stall_ms
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#8d6e00">{}</text>"##,
            x0 + 4.0,
            TOP + 14.0,
            escape(&label)
        );
    }
    // Axes.
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{0}" x2="{1}" y2="{0}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{0}" stroke="#333"/><line x1="{1}" y1="{TOP}" x2="{1}" y2="{0}" stroke="#333"/>"##,
        TOP + plot_h,
        LEFT + plot_w
    );
    for i in 0..=5 {
        let frac = f64::from(i) / 5.0;
        let yy = TOP + plot_h - frac * plot_h;
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{yy:.1}" text-anchor="end" fill="#1565c0">{:.0}</text><text x="{:.1}" y="{yy:.1}" fill="#e65100">{:.0}</text>"##,
            LEFT - 6.0,
            frac * max_iops,
            LEFT + plot_w + 6.0,
            frac * max_lat
        );
        let xx = LEFT + frac * plot_w;
        let _ = writeln!(
            svg,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{:.1} s</text>"#,
            TOP + plot_h + 18.0,
            frac * span_s
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{:.1}" fill="#1565c0">IOPS</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#e65100">p99 latency (µs)</text>"##,
        HEIGHT - 10.0,
        LEFT + plot_w,
        HEIGHT - 10.0
    );
    let points = |f: &dyn Fn(f64) -> f64, value: &dyn Fn(&nvme_host::workload::Bucket) -> f64| {
        timeline
            .iter()
            .map(|b| {
                let mid = (b.start_ms + b.duration_ms / 2.0) / 1000.0;
                format!("{:.1},{:.1}", x(mid), f(value(b)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{}"/>"##,
        points(&y_iops, &|b| b.iops)
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#e65100" stroke-width="1.5" stroke-dasharray="4 2" points="{}"/>"##,
        points(&y_lat, &|b| b.p99_us)
    );
    svg.push_str("</svg>\n");
    svg
}
