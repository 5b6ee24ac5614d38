//! Plot the criterion benches' results as PNGs in `docs/img/`:
//!
//! ```sh
//! cargo bench --bench append --bench group_commit --bench recovery
//! cargo run --release --example perf_plots
//! ```
//!
//! Reads `<criterion home>/<group>/<function>/<parameter>/new/` (the
//! median point estimate from `estimates.json`, the IDs and throughput from
//! `benchmark.json`) and the latency percentiles that `benches/group_commit.rs`
//! writes to `<criterion home>/oncelog-latency.json`. The criterion home is
//! `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else
//! `target/criterion`. Writes:
//!
//! * `docs/img/append_throughput.png` – MB/s against records per batch,
//!   engine (plain and idempotent batches) against the raw `pwrite` loop,
//!   `Durability::Os` and `Durability::Sync`;
//! * `docs/img/group_commit.png` – acknowledgements per second against
//!   appending threads, on 1 and 16 partitions, with one writer's
//!   `pwrite` + `fdatasync` rate; and p50 / p99 append latency;
//! * `docs/img/recovery.png` – open time against the active segment's size
//!   (after a crash, after a clean close, and a `pread` of the segment), and
//!   against the number of producers.
//!
//! A plot whose benches have not run is skipped with a warning. Text needs
//! a TrueType font: `$ONCELOG_PLOT_FONT`, else DejaVu Sans from Debian's
//! `fonts-dejavu-core`.

#[path = "../benches/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use support::criterion_home;

type Res<T> = Result<T, Box<dyn Error>>;

// ---------------------------------------------------------------- JSON ---

/// Just enough JSON for criterion's files and the latency file (booleans,
/// nulls and arrays are parsed, their contents dropped: nothing here needs
/// them).
#[derive(Debug, Clone)]
enum Json {
    Other,
    Num(f64),
    Str(String),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn parse(text: &str) -> Res<Json> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing characters at byte {}", p.i).into());
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.get(key),
            _ => None,
        }
    }

    fn num(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Res<()> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i).into())
        }
    }

    fn literal(&mut self, word: &str) -> Res<Json> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(Json::Other)
        } else {
            Err(format!("bad literal at byte {}", self.i).into())
        }
    }

    fn value(&mut self) -> Res<Json> {
        self.ws();
        match self.s.get(self.i) {
            None => Err("unexpected end of JSON".into()),
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    let v = self.value()?;
                    m.insert(k, v);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("expected ',' or '}}' at byte {}", self.i).into()),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Other);
                }
                loop {
                    self.value()?;
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Other);
                        }
                        _ => return Err(format!("expected ',' or ']' at byte {}", self.i).into()),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i])?;
                Ok(Json::Num(text.parse().map_err(|_| {
                    format!("bad number {text:?} at byte {start}")
                })?))
            }
        }
    }

    fn string(&mut self) -> Res<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else {
                return Err("unterminated string".into());
            };
            self.i += 1;
            match c {
                b'"' => return Ok(String::from_utf8(out)?),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err("unterminated escape".into());
                    };
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            let code = u32::from_str_radix(std::str::from_utf8(hex)?, 16)?;
                            self.i += 4;
                            let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                            out.extend_from_slice(ch.to_string().as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                _ => out.push(c),
            }
        }
    }
}

// ------------------------------------------------------------- results ---

/// One benchmark's result.
#[derive(Debug, Clone)]
struct Bench {
    /// Median time of one iteration, in seconds.
    median_s: f64,
    /// Bytes or elements per iteration, if the bench declared a throughput.
    per_iter: Option<f64>,
}

impl Bench {
    /// Throughput per second (bytes or elements), if declared.
    fn rate(&self) -> Option<f64> {
        self.per_iter.map(|n| n / self.median_s)
    }
}

/// Every result, by (group, function, parameter).
#[derive(Debug, Default)]
struct Results {
    benches: HashMap<(String, String, String), Bench>,
    latency: BTreeMap<String, Json>,
}

impl Results {
    fn load(home: &Path) -> Res<Results> {
        let mut r = Results::default();
        let mut stack = vec![home.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n == "new") {
                        if let Err(err) = r.load_one(&path) {
                            eprintln!("skipping {}: {err}", path.display());
                        }
                    } else if path
                        .file_name()
                        .is_some_and(|n| n != "base" && n != "change")
                    {
                        stack.push(path);
                    }
                }
            }
        }
        let latency = home.join("oncelog-latency.json");
        match std::fs::read_to_string(&latency) {
            Ok(text) => match Json::parse(&text)? {
                Json::Obj(m) => r.latency = m,
                _ => return Err(format!("{}: not a JSON object", latency.display()).into()),
            },
            Err(e) => eprintln!(
                "no latency file {} ({e}); run `cargo bench --bench group_commit`",
                latency.display()
            ),
        }
        Ok(r)
    }

    fn load_one(&mut self, new: &Path) -> Res<()> {
        let bench = Json::parse(&std::fs::read_to_string(new.join("benchmark.json"))?)?;
        let est = Json::parse(&std::fs::read_to_string(new.join("estimates.json"))?)?;
        let group = bench
            .get("group_id")
            .and_then(Json::str)
            .ok_or("no group_id")?;
        let function = bench
            .get("function_id")
            .and_then(Json::str)
            .unwrap_or_default();
        let value = bench
            .get("value_str")
            .and_then(Json::str)
            .unwrap_or_default();
        let median_ns = est
            .get("median")
            .and_then(|m| m.get("point_estimate"))
            .and_then(Json::num)
            .ok_or("no median point estimate")?;
        // {"Bytes": n} or {"Elements": n} (or another unit); null if none.
        let per_iter = match bench.get("throughput") {
            Some(Json::Obj(m)) => m.values().next().and_then(Json::num),
            _ => None,
        };
        self.benches.insert(
            (group.to_string(), function.to_string(), value.to_string()),
            Bench {
                median_s: median_ns * 1e-9,
                per_iter,
            },
        );
        Ok(())
    }

    fn get(&self, group: &str, function: &str, value: &str) -> Option<&Bench> {
        self.benches
            .get(&(group.to_string(), function.to_string(), value.to_string()))
    }

    /// The latency file's `field` (e.g. `p50_us`) for `id`.
    fn latency(&self, id: &str, field: &str) -> Option<f64> {
        self.latency.get(id)?.get(field)?.num()
    }
}

// ---------------------------------------------------------------- plots ---

/// One line: points at category indexes (x) and values (y).
struct Series {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// One chart: categorical x (evenly spaced: the parameters grow
/// geometrically, so this is a log axis), log y.
struct Panel {
    title: String,
    x_desc: String,
    y_desc: String,
    categories: Vec<String>,
    series: Vec<Series>,
}

impl Panel {
    fn new(title: &str, x_desc: &str, y_desc: &str, categories: &[&str]) -> Panel {
        Panel {
            title: title.to_string(),
            x_desc: x_desc.to_string(),
            y_desc: y_desc.to_string(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            series: Vec::new(),
        }
    }

    /// Add a line through the categories' values that exist (none: no line).
    fn line(&mut self, label: &str, color: RGBColor, dashed: bool, ys: &[Option<f64>]) {
        let points: Vec<(f64, f64)> = ys
            .iter()
            .enumerate()
            .filter_map(|(i, y)| y.filter(|y| *y > 0.0).map(|y| (i as f64, y)))
            .collect();
        if points.is_empty() {
            eprintln!("  no data for {:?} in {:?}", label, self.title);
            return;
        }
        self.series.push(Series {
            label: label.to_string(),
            color,
            dashed,
            points,
        });
    }

    /// A horizontal reference line across the whole chart.
    fn hline(&mut self, label: &str, color: RGBColor, y: Option<f64>) {
        let n = self.categories.len() as f64;
        match y.filter(|y| *y > 0.0) {
            Some(y) => self.series.push(Series {
                label: label.to_string(),
                color,
                dashed: true,
                points: vec![(-0.3, y), (n - 0.7, y)],
            }),
            None => eprintln!("  no data for {:?} in {:?}", label, self.title),
        }
    }

    fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, plotters::coord::Shift>) -> Res<()>
    where
        DB::ErrorType: 'static,
    {
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let lo = ys.clone().fold(f64::INFINITY, f64::min);
        let hi = ys.fold(0.0, f64::max);
        if !(lo.is_finite() && hi > 0.0) {
            return Ok(());
        }
        // Room above the lines for the legend.
        let (lo, hi) = (lo / 2.0, hi * 5.0);
        let n = self.categories.len();
        let categories = &self.categories;
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.4f64..(n as f64 - 0.6), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(n)
            .y_labels(6)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    categories.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y| if nice(*y) { si(*y) } else { String::new() })
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(TRANSPARENT)
            .draw()?;
        for s in &self.series {
            let style = ShapeStyle::from(&s.color).stroke_width(2);
            let color = s.color;
            let legend_dashed = s.dashed;
            if s.dashed {
                chart
                    .draw_series(DashedLineSeries::new(s.points.clone(), 8, 5, style))?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| legend_path(x, y, color, legend_dashed));
            } else {
                chart
                    .draw_series(LineSeries::new(s.points.clone(), style))?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| legend_path(x, y, color, legend_dashed));
            }
            if s.points.len() > 2 || !s.dashed {
                chart.draw_series(
                    s.points
                        .iter()
                        .map(|&p| Circle::new(p, 4, ShapeStyle::from(&s.color).filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font(("sans-serif", 14))
            .draw()?;
        Ok(())
    }
}

fn legend_path<DB: DrawingBackend>(
    x: i32,
    y: i32,
    color: RGBColor,
    dashed: bool,
) -> DynElement<'static, DB, (i32, i32)> {
    let style = ShapeStyle::from(&color).stroke_width(2);
    if dashed {
        plotters::element::DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 3, style).into_dyn()
    } else {
        PathElement::new(vec![(x, y), (x + 24, y)], style).into_dyn()
    }
}

/// Whether a log axis key point is 1, 2 or 5 times a power of ten (the
/// only ones labelled: plotters offers more, which crowd the axis).
fn nice(v: f64) -> bool {
    if v <= 0.0 {
        return false;
    }
    let mantissa = v / 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 0.01 * m)
}

/// 1234567 → "1.2M".
fn si(v: f64) -> String {
    let (scaled, unit) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if scaled >= 10.0 || (scaled - scaled.round()).abs() < 0.05 {
        format!("{scaled:.0}{unit}")
    } else {
        format!("{scaled:.1}{unit}")
    }
}

/// Draw `panels` side by side under `title` into `path`.
fn render(path: &Path, title: &str, panels: &[Panel]) -> Res<bool> {
    let panels: Vec<&Panel> = panels.iter().filter(|p| !p.is_empty()).collect();
    if panels.is_empty() {
        eprintln!(
            "skipping {}: no results (run the benches first)",
            path.display()
        );
        return Ok(false);
    }
    let width = 720 * panels.len() as u32;
    let root = BitMapBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 26))?;
    let areas = root.split_evenly((1, panels.len()));
    for (panel, area) in panels.iter().zip(&areas) {
        panel.draw(area)?;
    }
    root.present()?;
    println!("wrote {}", path.display());
    Ok(true)
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(90, 90, 90);
const PURPLE: RGBColor = RGBColor(148, 103, 189);

fn append_plot(r: &Results, out: &Path) -> Res<bool> {
    let per_batch = ["1", "16", "256"];
    let mut panels = Vec::new();
    for (group, raw, title) in [
        ("append_os", "raw_pwrite", "Durability::Os vs pwrite"),
        (
            "append_sync",
            "raw_pwrite_fdatasync",
            "Durability::Sync vs pwrite + fdatasync",
        ),
    ] {
        let mut p = Panel::new(title, "records per batch", "MB/s", &per_batch);
        for (size, size_label, dashed) in [("1k", "1 KiB", false), ("100b", "100 B", true)] {
            for (function, name, color) in [
                ("engine/plain", "engine", BLUE_),
                ("engine/idempotent", "engine, idempotent", GREEN_),
                (raw, raw, GREY),
            ] {
                let ys: Vec<Option<f64>> = per_batch
                    .iter()
                    .map(|n| {
                        r.get(group, function, &format!("{size}x{n}"))
                            .and_then(Bench::rate)
                            .map(|b| b / 1e6)
                    })
                    .collect();
                p.line(&format!("{name}, {size_label} records"), color, dashed, &ys);
            }
        }
        panels.push(p);
    }
    render(
        &out.join("append_throughput.png"),
        "Append throughput against batch size",
        &panels,
    )
}

fn group_commit_plot(r: &Results, out: &Path) -> Res<bool> {
    let threads = ["1", "4", "16"];
    let group = "group_commit";
    let cases = [
        ("engine/1_partition", "1 partition", BLUE_),
        ("engine/16_partitions", "16 partitions", ORANGE),
    ];
    let base = "fdatasync_one_writer";
    let mut acks = Panel::new(
        "Acknowledgements per second (Durability::Sync)",
        "appending threads",
        "acks/s",
        &threads,
    );
    for (function, label, color) in cases {
        let ys: Vec<Option<f64>> = threads
            .iter()
            .map(|t| r.get(group, function, t).and_then(Bench::rate))
            .collect();
        acks.line(label, color, false, &ys);
    }
    acks.hline(
        "one writer: pwrite + fdatasync",
        GREY,
        r.get(group, base, "1").and_then(Bench::rate),
    );

    let mut lat = Panel::new(
        "Append latency (all runs)",
        "appending threads",
        "microseconds",
        &threads,
    );
    for (function, label, color) in cases {
        for (field, q, dashed) in [("p50_us", "p50", false), ("p99_us", "p99", true)] {
            let ys: Vec<Option<f64>> = threads
                .iter()
                .map(|t| r.latency(&format!("{group}/{function}/{t}"), field))
                .collect();
            lat.line(&format!("{label}, {q}"), color, dashed, &ys);
        }
    }
    let base_id = format!("{group}/{base}/1");
    lat.hline(
        "one writer's fdatasync, p50",
        GREY,
        r.latency(&base_id, "p50_us"),
    );
    lat.hline(
        "one writer's fdatasync, p99",
        RGBColor(170, 170, 170),
        r.latency(&base_id, "p99_us"),
    );
    render(
        &out.join("group_commit.png"),
        "Group commit: Sync appends from many threads",
        &[acks, lat],
    )
}

fn recovery_plot(r: &Results, out: &Path) -> Res<bool> {
    let sizes = ["64MiB", "256MiB", "1024MiB"];
    let mut by_size = Panel::new(
        "Open time against active segment size (1k producers)",
        "active segment",
        "milliseconds",
        &["64 MiB", "256 MiB", "1 GiB"],
    );
    for (function, label, color, dashed) in [
        ("crash_open", "open after a crash", RED_, false),
        ("clean_open", "open after a clean close", BLUE_, false),
        (
            "pread_segment",
            "pread of the segment (1 MiB, aligned)",
            GREY,
            true,
        ),
    ] {
        let ys: Vec<Option<f64>> = sizes
            .iter()
            .map(|s| {
                r.get("recovery_size", function, s)
                    .map(|b| b.median_s * 1e3)
            })
            .collect();
        by_size.line(label, color, dashed, &ys);
    }
    let producers = ["1k", "100k", "1m"];
    let mut by_producers = Panel::new(
        "Open time against producers (checkpointed)",
        "producers",
        "milliseconds",
        &["1k", "100k", "1M"],
    );
    for (function, label, color) in [
        ("crash_open", "open after a crash", RED_),
        ("clean_open", "open after a clean close", PURPLE),
    ] {
        let ys: Vec<Option<f64>> = producers
            .iter()
            .map(|p| {
                r.get("recovery_producers", function, p)
                    .map(|b| b.median_s * 1e3)
            })
            .collect();
        by_producers.line(label, color, false, &ys);
    }
    render(
        &out.join("recovery.png"),
        "Recovery: store open time",
        &[by_size, by_producers],
    )
}

// ---------------------------------------------------------------- setup ---

/// Register a TrueType font as "sans-serif" (plotters' ab_glyph backend has
/// no system font lookup).
fn register_font() -> Res<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("ONCELOG_PLOT_FONT") {
        candidates.push(PathBuf::from(path));
    }
    candidates.extend(
        [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ]
        .map(PathBuf::from),
    );
    for path in &candidates {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a usable TrueType font", path.display()))?;
            return Ok(path.clone());
        }
    }
    Err(format!(
        "no font found (tried {}); install one with `apt-get install fonts-dejavu-core` \
         or point ONCELOG_PLOT_FONT at a .ttf file",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
    .into())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("perf_plots: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let font = register_font()?;
    let home = criterion_home();
    if !home.is_dir() {
        return Err(format!(
            "no criterion results in {} (run `cargo bench` first)",
            home.display()
        )
        .into());
    }
    let results = Results::load(&home)?;
    println!(
        "{} benchmark results and {} latency entries from {}; font {}",
        results.benches.len(),
        results.latency.len(),
        home.display(),
        font.display()
    );
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    std::fs::create_dir_all(&out)?;
    let mut wrote = 0;
    wrote += usize::from(append_plot(&results, &out)?);
    wrote += usize::from(group_commit_plot(&results, &out)?);
    wrote += usize::from(recovery_plot(&results, &out)?);
    if wrote == 0 {
        return Err(
            "no plot written: no results of the append, group_commit or recovery benches".into(),
        );
    }
    Ok(())
}
