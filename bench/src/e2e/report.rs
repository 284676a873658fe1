//! What a run prints and writes: a table, the JSON of every figure, and an SVG plot of CPU
//! per camera and alert latency against the number of cameras.
//!
//! The plot is a few dozen SVG elements written here: plotting crates need a font stack
//! (fontconfig, ab_glyph) to place text, which a build on a bare machine should not pull in.

use std::fmt::Write as _;

use super::{Pipeline, Run, Step};

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// One line per step.
pub fn table(run: &Run) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<11} {:>3} {:<9} {:>5} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>5} {:>6} {:>5} {:>6} {:>6}  held",
        "pipeline",
        "N",
        "sampling",
        "recv",
        "decode",
        "handed",
        "analys",
        "drop",
        "%core",
        "cores",
        "sim",
        "RSS",
        "batch",
        "p50 s",
        "p99 s"
    );
    let _ = writeln!(
        out,
        "{:<11} {:>3} {:<9} {:>5} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6} {:>5} {:>6} {:>5}",
        "", "", "", "fps/cam", "", "", "", "", "per cam", "", "cores", "MiB", "fill"
    );
    for s in &run.steps {
        let _ = writeln!(
            out,
            "{:<11} {:>3} {:<9} {:>5.1} {:>6.2} {:>7.2} {:>7.2} {:>6.2} {:>7.2} {:>6.2} {:>5.2} {:>6.0} {:>5.2} {:>6} {:>6}  {}",
            s.pipeline.as_str(),
            s.cameras,
            s.sampling,
            s.received,
            s.decoded,
            s.handed_on,
            s.analysed,
            s.dropped,
            s.cores_per_camera * 100.0,
            s.service_cores,
            s.simulator_cores,
            s.rss_mib,
            s.batch_fill,
            opt(s.latency.p50),
            opt(s.latency.p99),
            if s.held {
                "yes".to_owned()
            } else {
                format!("NO: {}", s.reasons.join("; "))
            }
        );
    }
    out
}

/// Where a camera's CPU goes: one line per step, % of a core per camera by stage.
pub fn stage_table(run: &Run) -> String {
    let mut out = String::new();
    let Some(names) = run.steps.iter().find(|s| !s.stage_cpu.is_empty()).map(|s| {
        s.stage_cpu
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    }) else {
        return out;
    };
    let _ = write!(out, "{:<11} {:>3}", "% of a core", "N");
    for n in &names {
        let _ = write!(out, " {:>8}", shorten(n));
    }
    let _ = writeln!(out, " {:>8}", "total");
    for s in run.steps.iter().filter(|s| !s.stage_cpu.is_empty()) {
        let _ = write!(out, "{:<11} {:>3}", s.pipeline.as_str(), s.cameras);
        for (_, v) in &s.stage_cpu {
            let _ = write!(out, " {v:>8.2}");
        }
        let _ = writeln!(out, " {:>8.2}", s.cores_per_camera * 100.0);
    }
    out
}

fn shorten(stage: &str) -> &str {
    match stage {
        "preprocess" => "preproc",
        "postprocess" => "postproc",
        "inference" => "infer",
        other => other,
    }
}

/// The conclusions: capacity, the ratio to the baseline, latency against the target.
pub fn summary(run: &Run) -> String {
    let mut out = String::new();
    let cores = run.machine.cores as f64;
    let capacity = |p| run.capacity(p);
    for p in [Pipeline::Sharpeyes, Pipeline::FullDecode] {
        if !run.steps.iter().any(|s| s.pipeline == p) {
            continue;
        }
        let _ = writeln!(
            out,
            "{:<11} largest N held: {}",
            p.as_str(),
            capacity(p).map_or("none".into(), |n| format!(
                "{n} cameras ({:.1} per core)",
                n as f64 / cores
            ))
        );
    }
    if let (Some(a), Some(b)) = (
        capacity(Pipeline::Sharpeyes),
        capacity(Pipeline::FullDecode),
    ) {
        let _ = writeln!(
            out,
            "cameras held, sharpeyes / full-decode: {:.1}x",
            a as f64 / b as f64
        );
    }
    // CPU per camera at the largest N both pipelines ran and held.
    let common = run
        .steps
        .iter()
        .filter(|s| s.pipeline == Pipeline::FullDecode && s.held && s.measured())
        .filter_map(|b| Some((b, run.step(Pipeline::Sharpeyes, b.cameras)?)))
        .max_by_key(|(b, _)| b.cameras);
    if let Some((b, a)) = common {
        let _ = writeln!(
            out,
            "CPU per camera at N={}: sharpeyes {:.1}% of a core, full-decode {:.1}%: {:.1}x cameras per core",
            b.cameras,
            a.cores_per_camera * 100.0,
            b.cores_per_camera * 100.0,
            b.cores_per_camera / a.cores_per_camera
        );
    }
    let target = run.options.latency_target();
    for s in run
        .steps
        .iter()
        .filter(|s| s.pipeline == Pipeline::Sharpeyes)
    {
        if let Some(p99) = s.latency.p99 {
            let _ = writeln!(
                out,
                "sharpeyes N={:<3} alert latency p50 {:.2} s, p99 {:.2} s ({} fires): target p99 <= {target:.1} s {}",
                s.cameras,
                s.latency.p50.unwrap_or(f64::NAN),
                p99,
                s.latency.samples.len(),
                if p99 <= target { "met" } else { "missed" }
            );
        }
    }
    out
}

/// Two panels: CPU per camera (% of a core) and alert latency (s), against N.
pub fn svg(run: &Run) -> String {
    const W: f64 = 960.0;
    let stages = run.steps.iter().any(|s| !s.stage_cpu.is_empty());
    let height: f64 = if stages { 660.0 } else { 470.0 };
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">sharpeyes end-to-end: {} cores, {}x{} at {} fps, GOP {}</text>
"#,
        W / 2.0,
        run.machine.cores,
        run.options.width,
        run.options.height,
        run.options.fps,
        run.options.gop
    );
    let max_n = run.steps.iter().map(|s| s.cameras).max().unwrap_or(1) as f64;
    let series = |p: Pipeline, f: &dyn Fn(&Step) -> Option<f64>| -> Vec<(f64, f64, bool)> {
        run.steps
            .iter()
            .filter(|s| s.pipeline == p && s.measured())
            .filter_map(|s| Some((s.cameras as f64, f(s)?, s.held)))
            .collect()
    };
    let cpu = |s: &Step| Some(s.cores_per_camera * 100.0);
    let p50 = |s: &Step| s.latency.p50;
    let p99 = |s: &Step| s.latency.p99;
    let target = run.options.latency_target();
    let lines_cpu = [
        (
            "sharpeyes",
            "#1f77b4",
            "",
            series(Pipeline::Sharpeyes, &cpu),
        ),
        (
            "full-decode",
            "#d62728",
            "",
            series(Pipeline::FullDecode, &cpu),
        ),
    ];
    let lines_latency = [
        (
            "sharpeyes p99",
            "#1f77b4",
            "",
            series(Pipeline::Sharpeyes, &p99),
        ),
        (
            "sharpeyes p50",
            "#1f77b4",
            "5,4",
            series(Pipeline::Sharpeyes, &p50),
        ),
        (
            "full-decode p99",
            "#d62728",
            "",
            series(Pipeline::FullDecode, &p99),
        ),
        (
            "full-decode p50",
            "#d62728",
            "5,4",
            series(Pipeline::FullDecode, &p50),
        ),
    ];
    panel(
        &mut out,
        70.0,
        "CPU per camera (% of a core)",
        max_n,
        &lines_cpu,
        None,
    );
    panel(
        &mut out,
        550.0,
        "alert latency, fire on screen -> MQTT (s)",
        max_n,
        &lines_latency,
        Some(("target p99", target)),
    );
    if stages {
        stage_bars(&mut out, run, 500.0);
    }
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">hollow points: N not held (a camera starved or a queue grew)</text>\n</svg>\n",
        W / 2.0,
        height - 8.0
    ));
    out
}

type Series<'a> = (&'a str, &'a str, &'a str, Vec<(f64, f64, bool)>);

fn panel(
    out: &mut String,
    left: f64,
    title: &str,
    max_n: f64,
    lines: &[Series],
    target: Option<(&str, f64)>,
) {
    let (top, w, h) = (100.0, 340.0, 300.0);
    // Against a target, the axis stops at three times it: an overloaded step's latency
    // would otherwise flatten everything else. Points above are drawn on the edge, labelled.
    let cap = target.map_or(f64::INFINITY, |t| 3.0 * t.1);
    let highest = lines
        .iter()
        .flat_map(|l| l.3.iter().map(|p| p.1))
        .chain(target.map(|t| t.1))
        .fold(0.0f64, f64::max)
        .min(cap)
        .max(f64::MIN_POSITIVE)
        * 1.05;
    // Ticks on round numbers: a step of 1, 2 or 5 times a power of ten, four to eight of them.
    let magnitude = 10f64.powf((highest / 4.0).log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| highest / s <= 8.0)
        .unwrap_or(10.0 * magnitude);
    let ticks = (highest / step).ceil().max(1.0) as u32;
    let max_y = step * f64::from(ticks);
    let x = |n: f64| left + n / max_n * w;
    let y = |v: f64| top + h - v.min(max_y) / max_y * h;
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{title}</text>",
        left + w / 2.0,
        top - 60.0
    );
    let _ = writeln!(
        out,
        "<path d=\"M{left},{top} V{} H{}\" fill=\"none\" stroke=\"#333\"/>",
        top + h,
        left + w
    );
    for i in 0..=ticks {
        let v = step * f64::from(i);
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left + w,
            left - 6.0,
            y(v) + 4.0,
            if step < 1.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            },
            yy = y(v)
        );
    }
    let mut ns: Vec<f64> = lines.iter().flat_map(|l| l.3.iter().map(|p| p.0)).collect();
    ns.sort_by(f64::total_cmp);
    ns.dedup();
    for n in ns {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{n}</text>",
            x(n),
            top + h + 16.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">cameras (N)</text>",
        left + w / 2.0,
        top + h + 34.0
    );
    if let Some((label, t)) = target {
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#2ca02c\" stroke-dasharray=\"2,3\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#2ca02c\">{label} {t:.1} s</text>",
            left + w,
            left + w,
            y(t) - 4.0,
            yy = y(t)
        );
    }
    for (i, (label, colour, dash, points)) in lines.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(n, v, _)| format!("{:.1},{:.1}", x(*n), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>",
            path.join(" ")
        );
        for (n, v, held) in points {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                x(*n),
                y(*v),
                if *held { colour } else { "white" }
            );
            if *v > max_y {
                let _ = writeln!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{colour}\">{v:.0} &#8593;</text>",
                    x(*n) - 6.0,
                    y(*v) + 4.0 + 12.0 * (i % 2) as f64
                );
            }
        }
        // The legend: two columns between the title and the plot.
        let (lx, ly) = (
            left + 170.0 * (i % 2) as f64,
            top - 36.0 + 16.0 * (i / 2) as f64,
        );
        let _ = writeln!(
            out,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"{}\">{label}</text>",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
    }
}

/// Colours of the stages in the stacked bars, in the stages' order, `other` last.
const STAGE_COLOURS: [&str; 11] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#d3d3d3",
];

/// A stacked bar per pipeline, at the largest N each ran: where a camera's CPU goes.
fn stage_bars(out: &mut String, run: &Run, top: f64) {
    let bars: Vec<&Step> = [Pipeline::Sharpeyes, Pipeline::FullDecode]
        .into_iter()
        .filter_map(|p| {
            run.steps
                .iter()
                .filter(|s| s.pipeline == p && !s.stage_cpu.is_empty())
                .max_by_key(|s| s.cameras)
        })
        .collect();
    let Some(first) = bars.first() else {
        return;
    };
    let (left, w, h) = (160.0, 640.0, 26.0);
    let widest = bars
        .iter()
        .map(|s| s.stage_cpu.iter().map(|(_, v)| v).sum::<f64>())
        .fold(f64::MIN_POSITIVE, f64::max);
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">where a camera's CPU goes (% of a core per camera, thread CPU by stage)</text>",
        left + w / 2.0,
        top - 12.0
    );
    for (i, s) in bars.iter().enumerate() {
        let y = top + i as f64 * (h + 12.0);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} N={}</text>",
            left - 8.0,
            y + h / 2.0 + 4.0,
            s.pipeline.as_str(),
            s.cameras
        );
        let mut x = left;
        for (j, (name, v)) in s.stage_cpu.iter().enumerate() {
            let width = v / widest * w;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{h}\" fill=\"{}\"><title>{name}: {v:.2}%</title></rect>",
                STAGE_COLOURS[j.min(STAGE_COLOURS.len() - 1)]
            );
            x += width;
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\">{:.1}%</text>",
            x + 6.0,
            y + h / 2.0 + 4.0,
            s.cores_per_camera * 100.0
        );
    }
    let legend_y = top + bars.len() as f64 * (h + 12.0) + 8.0;
    for (j, (name, _)) in first.stage_cpu.iter().enumerate() {
        let x = left + (j % 6) as f64 * 110.0;
        let y = legend_y + (j / 6) as f64 * 18.0;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            STAGE_COLOURS[j.min(STAGE_COLOURS.len() - 1)],
            x + 16.0,
            y + 10.0
        );
    }
}
