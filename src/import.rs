//! `sharpeyes import`: onboarding unit cameras by the hundred from a CSV file.
//!
//! Every row is checked as `check-config` would check a `[[cameras]]` entry (each problem
//! with its CSV line and column), given a GB/T 28181 id when it has none, and probed in
//! parallel with a bounded concurrency (reachable, login, codec, resolution, GOP, bitrate,
//! a thumbnail). The report goes to the terminal and to a directory: `report.html` with the
//! thumbnails, and `cameras.toml` with the entries of the cameras that passed, ready to paste
//! into the configuration.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use sharpeyes_config::gbt28181::DeviceId;
use sharpeyes_config::{Camera, Config, redact_url};
use sharpeyes_ingest::ErrorKind;

/// The columns a CSV may have, in the order the report lists them. `name`, `grid` and a
/// stream (`url`, or `vendor` and `host`) are needed.
pub const COLUMNS: [&str; 14] = [
    "id",
    "name",
    "kind",
    "unit",
    "grid",
    "hazards",
    "url",
    "vendor",
    "host",
    "port",
    "channel",
    "stream",
    "credentials",
    "industry",
];

/// Rows read at most: a county's unit cameras (about 17,000). Every passing row's thumbnail
/// is held until the report is written, [`THUMBNAIL_WIDTH`] wide: some 5 KB each.
pub const MAX_ROWS: usize = 20_000;

/// Thumbnails are this wide, as the report shows them.
const THUMBNAIL_WIDTH: u32 = 160;

/// How the cameras are probed.
#[derive(Debug, Clone, Copy)]
pub struct ImportOptions {
    /// Cameras probed at once.
    pub concurrency: usize,
    /// Bound on each connection and RTSP handshake.
    pub connect: Duration,
    /// How long each stream is watched for its frame rate, GOP and bitrate.
    pub watch: Duration,
}

/// What became of one CSV row.
#[derive(Debug, Clone)]
pub struct RowReport {
    /// Its line in the CSV (the header is line 1).
    pub line: u64,
    pub id: Option<String>,
    /// The id was made here, from the grid's county code and a serial.
    pub generated_id: bool,
    pub name: String,
    /// The stream, without credentials.
    pub url: String,
    pub status: Status,
    /// The `[[cameras]]` entry, for rows that passed.
    pub entry: Option<String>,
    /// A small JPEG of the first keyframe, for rows that passed.
    pub thumbnail: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub enum Status {
    /// The row itself is wrong: (column, problem) for each problem.
    Invalid(Vec<(String, String)>),
    /// The camera did not answer as a camera should: a short kind (`unreachable`, `login`,
    /// `not-found`, `codec`, `no-keyframe`, `secret`, `error`), what happened and what to
    /// check.
    Failed {
        kind: &'static str,
        message: String,
        hint: &'static str,
    },
    Passed(Probed),
}

/// What the probe of a passing camera found.
#[derive(Debug, Clone)]
pub struct Probed {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub gop: Option<u32>,
    pub bitrate_kbps: f64,
}

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}x{}, {:.1} fps, GOP {}, {:.0} kbit/s",
            self.codec,
            self.width,
            self.height,
            self.fps,
            self.gop.map_or("?".to_owned(), |g| g.to_string()),
            self.bitrate_kbps
        )
    }
}

/// A row as read: its line and its cells by column name.
#[derive(Debug, Clone)]
struct CsvRow {
    line: u64,
    cells: HashMap<String, String>,
    /// The row's number of cells and the header's, when they differ.
    ragged: Option<(usize, usize)>,
}

impl CsvRow {
    fn get(&self, column: &str) -> &str {
        self.cells.get(column).map_or("", String::as_str)
    }
}

/// Reads the CSV: a header naming columns of [`COLUMNS`] (any order, any case), then rows.
/// An unknown column, a missing `name` or `grid` column, or more than [`MAX_ROWS`] rows is
/// an error for the whole file.
fn read_csv(text: &str) -> Result<Vec<CsvRow>, String> {
    let body = text.trim_start_matches('\u{feff}');
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("line 1: {e}"))?
        .iter()
        .map(str::to_lowercase)
        .collect();
    for (i, h) in header.iter().enumerate() {
        if !COLUMNS.contains(&h.as_str()) {
            return Err(format!(
                "line 1, column {}: `{h}` is not a column; the columns are {}",
                i + 1,
                COLUMNS.join(", ")
            ));
        }
    }
    for needed in ["name", "grid"] {
        if !header.iter().any(|h| h == needed) {
            return Err(format!("line 1: no `{needed}` column"));
        }
    }
    if !header.iter().any(|h| h == "url" || h == "host") {
        return Err("line 1: no `url` column, and no `vendor` and `host` columns".into());
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        if rows.len() == MAX_ROWS {
            return Err(format!("more than {MAX_ROWS} rows: split the file"));
        }
        // The line the record's text starts on: the reader's own count starts at blank
        // lines it skipped before the record.
        let line = record.position().map_or(0, |p| {
            let at = (p.byte() as usize).min(body.len());
            let rest = body.get(at..).unwrap_or_default();
            let blank = rest.len() - rest.trim_start_matches(['\r', '\n']).len();
            1 + body[..at + blank].matches('\n').count() as u64
        });
        let ragged = (record.len() != header.len()).then_some((record.len(), header.len()));
        let cells = header
            .iter()
            .cloned()
            .zip(record.iter().map(str::to_owned))
            .collect();
        rows.push(CsvRow {
            line,
            cells,
            ragged,
        });
    }
    Ok(rows)
}

/// The stream URL of a row: its `url`, or the vendor's pattern for `host`, `port`,
/// `channel` and `stream` (Hikvision `/Streaming/Channels/101`, Dahua
/// `/cam/realmonitor?channel=1&subtype=0`).
fn stream_url(row: &CsvRow, problems: &mut Vec<(String, String)>) -> Option<String> {
    let mut problem = |column: &str, message: String| problems.push((column.into(), message));
    let (url, vendor, host) = (row.get("url"), row.get("vendor"), row.get("host"));
    if !url.is_empty() {
        if !vendor.is_empty() || !host.is_empty() {
            problem("url", "give `url`, or `vendor` and `host`, not both".into());
            return None;
        }
        // Unit cameras are on the network: a `file://` replay is for the configuration.
        if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) {
            problem(
                "url",
                format!("`{}` is not rtsp:// or rtsps://", redact_url(url)),
            );
            return None;
        }
        return Some(url.to_owned());
    }
    if host.is_empty() {
        problem("host", "no `url` and no `host`: give one".into());
        return None;
    }
    // A host name or address, nothing that would change the URL around it.
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        problem("host", format!("`{host}` is not a host name or address"));
        return None;
    }
    let number = |column: &str, default: u32, max: u32, problem: &mut dyn FnMut(&str, String)| {
        let cell = row.get(column);
        if cell.is_empty() {
            return Some(default);
        }
        match cell.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                problem(column, format!("`{cell}` is not a number from 1 to {max}"));
                None
            }
        }
    };
    let port = number("port", 554, 65_535, &mut problem);
    let channel = number("channel", 1, 999, &mut problem);
    let sub = match row.get("stream") {
        "" | "main" => Some(false),
        "sub" => Some(true),
        other => {
            problem("stream", format!("`{other}` is not `main` or `sub`"));
            None
        }
    };
    let (port, channel, sub) = (port?, channel?, sub?);
    match vendor.to_lowercase().as_str() {
        "hikvision" | "hik" => Some(format!(
            "rtsp://{host}:{port}/Streaming/Channels/{channel}0{}",
            if sub { 2 } else { 1 }
        )),
        "dahua" => Some(format!(
            "rtsp://{host}:{port}/cam/realmonitor?channel={channel}&subtype={}",
            u8::from(sub)
        )),
        "" => {
            problem(
                "vendor",
                "`host` needs a `vendor` (hikvision or dahua) for its URL pattern; or give `url`"
                    .into(),
            );
            None
        }
        other => {
            problem(
                "vendor",
                format!("`{other}` has no URL pattern here (hikvision, dahua); give `url`"),
            );
            None
        }
    }
}

/// Hands out GB/T 28181 ids for rows without one: the grid's county code, `00` for the
/// grass-roots unit, the row's industry, 132 (IP camera), network 0, and the first serial no
/// camera of the configuration or the file has.
struct IdMaker {
    taken: std::collections::HashSet<String>,
}

impl IdMaker {
    fn make(&mut self, grid: &str, industry: u8) -> Result<String, String> {
        let county = grid
            .get(..6)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
        let Some(county) = county else {
            return Err(format!(
                "no id, and grid `{grid}` does not start with a 6-digit county code to make one from: give an id"
            ));
        };
        let region = format!("{county}00");
        for serial in 1..=999_999 {
            let id = DeviceId::compose(&region, industry, 132, 0, serial)
                .map_err(|e| format!("no id, and none can be made: {e}"))?;
            if self.taken.insert(id.as_str().to_owned()) {
                return Ok(id.as_str().to_owned());
            }
        }
        Err(format!(
            "no id, and every serial under {region} is taken: give an id"
        ))
    }
}

/// The `[[cameras]]` entry of a row whose own cells are fine, written from a TOML table so
/// that whatever a cell holds stays a string of this one camera.
fn camera_entry(row: &CsvRow, id: &str, name: &str, kind: &str, url: &str, grid: &str) -> String {
    let mut table = toml::Table::new();
    table.insert("id".into(), id.into());
    table.insert("name".into(), name.into());
    table.insert("kind".into(), kind.into());
    if !row.get("unit").is_empty() {
        table.insert("unit".into(), row.get("unit").into());
    }
    table.insert("url".into(), url.into());
    if !row.get("credentials").is_empty() {
        table.insert("credentials".into(), row.get("credentials").into());
    }
    table.insert("grid".into(), grid.into());
    let hazards: Vec<toml::Value> = (row.get("hazards").split([';', ',']))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| h.to_owned().into())
        .collect();
    if !hazards.is_empty() {
        table.insert("hazards".into(), toml::Value::Array(hazards));
    }
    let mut doc = toml::Table::new();
    doc.insert("cameras".into(), vec![toml::Value::Table(table)].into());
    toml::to_string(&doc).unwrap_or_default()
}

/// A configuration problem's message with its hint, as one report cell.
fn problem_text(problem: &sharpeyes_config::diag::Problem) -> String {
    match &problem.hint {
        Some(h) => format!("{}; {h}", problem.message),
        None => problem.message.clone(),
    }
}

/// The CSV column a configuration problem about the row's camera belongs to.
fn column_of(problem: &sharpeyes_config::diag::Problem, from_host: bool) -> String {
    use sharpeyes_config::diag::Segment;
    let field = problem.path.0.get(2).and_then(|s| match s {
        Segment::Key(k) => Some(k.as_str()),
        Segment::Index(_) => None,
    });
    match field {
        Some("url") if from_host => "host".into(),
        Some(f) if COLUMNS.contains(&f) => f.into(),
        _ => "(row)".into(),
    }
}

/// A row made into a camera the configuration accepts, or its problems.
struct Checked {
    line: u64,
    id: Option<String>,
    generated_id: bool,
    name: String,
    url: String,
    result: Result<(Camera, String), Vec<(String, String)>>,
}

/// Checks every row against the configuration in `config_text` (already valid).
fn check_rows(
    rows: &[CsvRow],
    config_text: &str,
    origin: &Path,
    model_dirs: &[PathBuf],
    config: &Config,
) -> Vec<Checked> {
    let index = config.cameras.len();
    let mut ids = IdMaker {
        taken: (config.cameras.iter().map(|c| c.id.clone()))
            .chain(rows.iter().map(|r| r.get("id").to_owned()))
            .filter(|id| !id.is_empty())
            .collect(),
    };
    let mut seen_ids: HashMap<String, u64> = HashMap::new();
    let mut seen_urls: HashMap<String, u64> = HashMap::new();
    let mut checked = Vec::with_capacity(rows.len());
    let mut entries = Vec::new();
    for row in rows {
        let mut problems = Vec::new();
        if let Some((n, header)) = row.ragged {
            problems.push((
                "(row)".into(),
                format!("has {n} cells; the header has {header}"),
            ));
        }
        let name = row.get("name").to_owned();
        if name.is_empty() {
            problems.push(("name".into(), "empty: every camera needs a name".into()));
        }
        let grid = row.get("grid").to_owned();
        let kind = match row.get("kind") {
            "" => "social-unit".to_owned(),
            k => k.to_owned(),
        };
        let url = stream_url(row, &mut problems);
        let industry = match row.get("industry") {
            "" if kind == "sharp-eyes" => Some(0),
            "" => Some(53),
            cell => match cell.parse::<u8>() {
                Ok(n) if n <= 99 && cell.len() == 2 => Some(n),
                _ => {
                    problems.push(("industry".into(), format!("`{cell}` is not a 2-digit industry code (GB/T 28181: e.g. 50 hotels, 51 finance, 53 business services)")));
                    None
                }
            },
        };
        let known_grid = config.grids.iter().any(|g| g.id == grid);
        if !grid.is_empty() && !known_grid {
            problems.push((
                "grid".into(),
                format!("no grid `{grid}` in the configuration"),
            ));
        }
        let (id, generated_id) = match row.get("id") {
            "" if grid.is_empty() => {
                let why = "no id, and no grid to make one from: give either";
                problems.push(("id".into(), why.into()));
                (None, false)
            }
            "" if !known_grid => (None, false),
            "" => match industry.map(|i| ids.make(&grid, i)) {
                Some(Ok(id)) => (Some(id), true),
                Some(Err(e)) => {
                    problems.push(("id".into(), e));
                    (None, false)
                }
                None => (None, false),
            },
            id => (Some(id.to_owned()), false),
        };
        if let Some(id) = &id {
            if let Some(first) = seen_ids.insert(id.clone(), row.line) {
                problems.push((
                    "id".into(),
                    format!("`{id}` is also the id on line {first}"),
                ));
            }
        }
        if let Some(u) = &url {
            if let Some(first) = seen_urls.insert(u.clone(), row.line) {
                problems.push(("url".into(), format!("the same stream as line {first}")));
            }
        }
        let shown = url.as_deref().map(redact_url).unwrap_or_default();
        let result = match (problems.is_empty(), &id, &url) {
            (true, Some(id), Some(url)) => {
                entries.push(Entry {
                    at: checked.len(),
                    text: camera_entry(row, id, &name, &kind, url, &grid),
                    from_host: row.get("url").is_empty(),
                });
                Err(Vec::new()) // settled below, with the other rows
            }
            _ => Err(problems),
        };
        checked.push(Checked {
            line: row.line,
            id,
            generated_id,
            name,
            url: shown,
            result,
        });
    }
    settle(
        &mut checked,
        &entries,
        config_text,
        origin,
        model_dirs,
        index,
    );
    checked
}

/// A row's `[[cameras]]` entry, for the configuration to judge.
struct Entry {
    /// Its row's place in the checked rows.
    at: usize,
    text: String,
    from_host: bool,
}

/// Lets the configuration judge the rows' entries: the cameras of those it accepts, the
/// problems of the others. One entry at a time in a copy of the whole configuration parsed
/// the configuration once per row: 2,000 rows against 1,600 cameras took 11.7 s, and a
/// county's 17,000 would take minutes. So all entries are parsed together, each problem goes
/// to the row whose `cameras[i]` it names, and what is left is parsed again. A problem that
/// names no row (never seen: the base configuration is valid) sends the rows left back to
/// one at a time.
fn settle(
    checked: &mut [Checked],
    entries: &[Entry],
    config_text: &str,
    origin: &Path,
    model_dirs: &[PathBuf],
    index: usize,
) {
    let parse = |left: &[&Entry]| {
        let mut text = config_text.to_owned();
        for e in left {
            text.push('\n');
            text.push_str(&e.text);
        }
        Config::parse(&text, origin, model_dirs)
    };
    let mut left: Vec<&Entry> = entries.iter().collect();
    // Each round takes out at least one row, and the last can only succeed or name none.
    for _ in 0..3 {
        if left.is_empty() {
            return;
        }
        let found = match parse(&left) {
            Ok(loaded) => {
                for (k, e) in left.iter().enumerate() {
                    checked[e.at].result = camera_of(&loaded.config, index + k, e);
                }
                return;
            }
            Err(found) => found,
        };
        let mut by_row: HashMap<usize, Vec<(String, String)>> = HashMap::new();
        let mut placed_all = true;
        for p in found.errors() {
            match camera_index(p).and_then(|i| i.checked_sub(index)) {
                Some(k) if k < left.len() => by_row
                    .entry(k)
                    .or_default()
                    .push((column_of(p, left[k].from_host), problem_text(p))),
                _ => placed_all = false,
            }
        }
        if !placed_all || by_row.is_empty() {
            break;
        }
        for (&k, problems) in &by_row {
            checked[left[k].at].result = Err(problems.clone());
        }
        left = (left.into_iter().enumerate())
            .filter(|(k, _)| !by_row.contains_key(k))
            .map(|(_, e)| e)
            .collect();
    }
    for e in left {
        checked[e.at].result = match parse(&[e]) {
            Ok(loaded) => camera_of(&loaded.config, index, e),
            Err(found) => Err((found.errors())
                .map(|p| (column_of(p, e.from_host), problem_text(p)))
                .collect()),
        };
    }
}

/// The camera the configuration read from entry `e`, the `i`th of its cameras.
fn camera_of(
    config: &Config,
    i: usize,
    e: &Entry,
) -> Result<(Camera, String), Vec<(String, String)>> {
    match config.cameras.get(i) {
        Some(camera) => Ok((camera.clone(), e.text.clone())),
        None => Err(vec![("(row)".into(), "not read as a camera".into())]),
    }
}

/// `i` of a problem at `cameras[i]...`.
fn camera_index(problem: &sharpeyes_config::diag::Problem) -> Option<usize> {
    use sharpeyes_config::diag::Segment;
    match problem.path.0.as_slice() {
        [Segment::Key(k), Segment::Index(i), ..] if k == "cameras" => Some(*i),
        _ => None,
    }
}

/// Probes one camera: what the report says of it, and its thumbnail.
async fn probe_one(camera: &Camera, options: ImportOptions) -> (Status, Option<Vec<u8>>) {
    let url = match sharpeyes_ingest::login_url(camera, &camera.url) {
        Ok(u) => u,
        Err(e) => {
            return (
                Status::Failed {
                    kind: "secret",
                    message: e.to_string(),
                    hint: "set the variable or file the credentials name",
                },
                None,
            );
        }
    };
    match sharpeyes_ingest::probe(&url, options.connect, options.watch).await {
        Ok(report) => {
            let thumbnail = report.snapshot.as_ref().and_then(|f| {
                let img = image::RgbImage::from_raw(f.width, f.height, f.rgb.clone())?;
                let height = THUMBNAIL_WIDTH * f.height / f.width.max(1);
                let small = image::imageops::thumbnail(&img, THUMBNAIL_WIDTH, height.max(1));
                let mut jpeg = Vec::new();
                let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80);
                small.write_with_encoder(encoder).ok()?;
                Some(jpeg)
            });
            let probed = Probed {
                codec: report.codec_string.clone(),
                width: report.width,
                height: report.height,
                fps: report.measured_fps,
                gop: report.gop_frames,
                bitrate_kbps: report.bitrate_bps / 1000.0,
            };
            (Status::Passed(probed), thumbnail)
        }
        Err(e) => {
            let kind = match e.kind() {
                ErrorKind::Refused | ErrorKind::Unreachable | ErrorKind::ConnectTimeout(_) => {
                    "unreachable"
                }
                ErrorKind::Unauthorized | ErrorKind::Forbidden => "login",
                ErrorKind::NotFound => "not-found",
                ErrorKind::Unsupported(_) => "codec",
                ErrorKind::NoKeyframe(_) => "no-keyframe",
                _ => "error",
            };
            let hint = sharpeyes_ingest::probe_hint(&e);
            (
                Status::Failed {
                    kind,
                    message: e.kind().to_string(),
                    hint,
                },
                None,
            )
        }
    }
}

/// Reads `csv_text`, checks every row against the configuration (`config_text`, read from
/// `origin`) and probes the cameras that pass, `options.concurrency` at a time. The rows'
/// reports come back in the file's order.
pub async fn import(
    csv_text: &str,
    config_text: &str,
    origin: &Path,
    model_dirs: &[PathBuf],
    options: ImportOptions,
) -> Result<Vec<RowReport>, String> {
    let config = Config::parse(config_text, origin, model_dirs)
        .map_err(|p| format!("{}: fix the configuration first:\n{p}", origin.display()))?
        .config;
    let rows = read_csv(csv_text)?;
    let checked = check_rows(&rows, config_text, origin, model_dirs, &config);
    let probes = futures_util::stream::iter(checked.into_iter().map(|c| async move {
        let (status, entry, thumbnail) = match &c.result {
            Ok((camera, entry)) => {
                let (status, thumb) = probe_one(camera, options).await;
                let passed = matches!(status, Status::Passed(_));
                (status, passed.then(|| entry.clone()), thumb)
            }
            Err(problems) => (Status::Invalid(problems.clone()), None, None),
        };
        RowReport {
            line: c.line,
            id: c.id,
            generated_id: c.generated_id,
            name: c.name,
            url: c.url,
            status,
            entry,
            thumbnail,
        }
    }));
    let mut reports: Vec<RowReport> = probes
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    reports.sort_by_key(|r| r.line);
    Ok(reports)
}

/// One line per row for the terminal: line, id, status and what to do.
pub fn table(reports: &[RowReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:>5}  {:<22} {:<12} details", "line", "id", "status");
    for r in reports {
        let id = r.id.as_deref().unwrap_or("-");
        let id = if r.generated_id {
            format!("{id}*")
        } else {
            id.to_owned()
        };
        match &r.status {
            Status::Passed(p) => {
                let _ = writeln!(out, "{:>5}  {id:<22} {:<12} {p}", r.line, "ok");
            }
            Status::Failed {
                kind,
                message,
                hint,
            } => {
                let _ = writeln!(out, "{:>5}  {id:<22} {kind:<12} {message}; {hint}", r.line);
            }
            Status::Invalid(problems) => {
                for (column, problem) in problems {
                    let _ = writeln!(
                        out,
                        "{:>5}  {id:<22} {:<12} column {column}: {problem}",
                        r.line, "invalid"
                    );
                }
            }
        }
    }
    let passed = reports
        .iter()
        .filter(|r| matches!(r.status, Status::Passed(_)))
        .count();
    let _ = writeln!(
        out,
        "{passed} of {} cameras passed{}",
        reports.len(),
        if reports.iter().any(|r| r.generated_id) {
            "; * marks ids made from the grid's county code"
        } else {
            ""
        }
    );
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Writes `report.html`, `thumbs/line-{N}.jpg` and `cameras.toml` (the passing cameras'
/// entries) into `dir`, which must be new or empty.
pub fn write_report(dir: &Path, reports: &[RowReport]) -> Result<(), String> {
    crate::export::prepare(dir, &["thumbs"])?;
    let write = |path: PathBuf, bytes: &[u8]| {
        std::fs::write(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>sharpeyes import</title>\n<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}.ok{color:#2e7d32}.bad{color:#c62828}img{width:160px}</style></head><body>\n<h1>Camera import</h1>\n<table><tr><th>line</th><th>id</th><th>name</th><th>stream</th><th>status</th><th>found</th><th>picture</th></tr>\n",
    );
    let mut toml =
        String::from("# Cameras that passed `sharpeyes import`: paste into the configuration.\n");
    for r in reports {
        let id = r.id.as_deref().unwrap_or("");
        // Each cell escaped here: names, ids and problems come from the CSV.
        let (class, status, found) = match &r.status {
            Status::Passed(p) => ("ok", "ok", esc(&p.to_string())),
            Status::Failed {
                kind,
                message,
                hint,
            } => ("bad", *kind, esc(&format!("{message}; {hint}"))),
            Status::Invalid(problems) => (
                "bad",
                "invalid",
                problems
                    .iter()
                    .map(|(c, p)| esc(&format!("column {c}: {p}")))
                    .collect::<Vec<_>>()
                    .join("<br>"),
            ),
        };
        let picture = match &r.thumbnail {
            Some(jpeg) => {
                let name = format!("thumbs/line-{}.jpg", r.line);
                write(dir.join(&name), jpeg)?;
                format!("<img src=\"{name}\" alt=\"\">")
            }
            None => String::new(),
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{found}</td><td>{picture}</td></tr>",
            r.line,
            esc(id),
            if r.generated_id { " (made)" } else { "" },
            esc(&r.name),
            esc(&r.url),
            status,
        );
        if let Some(entry) = &r.entry {
            let _ = write!(toml, "\n# line {}\n{entry}", r.line);
        }
    }
    html.push_str("</table></body></html>\n");
    write(dir.join("report.html"), html.as_bytes())?;
    write(dir.join("cameras.toml"), toml.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[(&str, &str)]) -> CsvRow {
        CsvRow {
            line: 2,
            cells: cells
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ragged: None,
        }
    }

    fn url_of(cells: &[(&str, &str)]) -> Result<String, Vec<(String, String)>> {
        let mut problems = Vec::new();
        stream_url(&row(cells), &mut problems).ok_or(problems)
    }

    #[test]
    fn vendor_patterns_make_the_main_and_sub_stream_urls() {
        let hik = [
            ("vendor", "Hikvision"),
            ("host", "10.0.0.7"),
            ("channel", "3"),
        ];
        assert_eq!(
            url_of(&hik).unwrap(),
            "rtsp://10.0.0.7:554/Streaming/Channels/301"
        );
        let dahua = [
            ("vendor", "dahua"),
            ("host", "cam.local"),
            ("port", "8554"),
            ("stream", "sub"),
        ];
        assert_eq!(
            url_of(&dahua).unwrap(),
            "rtsp://cam.local:8554/cam/realmonitor?channel=1&subtype=1"
        );
        let given = [("url", "rtsp://10.0.0.8/live")];
        assert_eq!(url_of(&given).unwrap(), "rtsp://10.0.0.8/live");
    }

    #[test]
    fn a_host_that_would_change_the_url_and_bad_numbers_are_named_by_column() {
        let sneaky = [("vendor", "hikvision"), ("host", "evil@10.0.0.7/x")];
        let problems = url_of(&sneaky).unwrap_err();
        assert_eq!(problems[0].0, "host", "{problems:?}");
        let bad = [
            ("vendor", "hikvision"),
            ("host", "10.0.0.7"),
            ("port", "0"),
            ("channel", "x"),
        ];
        let columns: Vec<String> = url_of(&bad).unwrap_err().into_iter().map(|p| p.0).collect();
        assert_eq!(columns, ["port", "channel"]);
        let local = [("url", "file:///etc/passwd")];
        assert_eq!(url_of(&local).unwrap_err()[0].0, "url");
        let unknown = [("vendor", "acme"), ("host", "10.0.0.7")];
        assert!(
            url_of(&unknown).unwrap_err()[0]
                .1
                .contains("hikvision, dahua")
        );
    }

    /// An integrator's file is hostile until checked: whatever it holds, every row ends as a
    /// camera or as problems by column, never a panic, and a URL made from a `host` stays
    /// one RTSP URL to that host.
    #[test]
    fn mangled_csv_files_never_panic_and_urls_stay_on_their_host() {
        const HEADER: &str =
            "id,name,unit,grid,hazards,url,vendor,host,port,channel,stream,credentials,industry\n";
        const SAMPLE: &str = ",东元超市,\"东元, 超市\",321322-001-003-07,fire; fire,,hikvision,10.0.0.7,554,2,sub,unit-login,53\n32132200531320000009,北门,北门商店,321322-001,fire,rtsp://10.0.0.8/ch1,,,,,,,\n";
        let text = concat!(
            "[node]\nid = \"n\"\n",
            include_str!("../fixtures/config/grids.toml"),
            include_str!("../fixtures/config/fire.toml"),
            "\n[credentials.unit-login]\nuser = \"u\"\npassword = \"p\"\nnetworks = [\"10.0.0.0/8\"]\n",
        );
        let (_models, dirs, config) = parsed(text);
        let (mut cameras, mut refused) = (0, 0);
        let plain = read_csv(&format!("{HEADER}{SAMPLE}")).unwrap();
        for c in check_rows(&plain, text, Path::new("c.toml"), &dirs, &config) {
            assert!(c.result.is_ok(), "the sample passes: {:?}", c.result.err());
        }
        sharpeyes_testkit::hostile::check(
            "import rows",
            1000,
            // The rows mangled under a good header: a bad header stops the file at once.
            |h| [HEADER.as_bytes(), &h.mangle(SAMPLE.as_bytes())].concat(),
            |bytes| {
                let Ok(csv) = std::str::from_utf8(bytes) else {
                    return;
                };
                let rows = read_csv(csv).expect("a good header, any rows");
                let lines = csv.lines().count() as u64 + 1;
                for row in &rows {
                    assert!(
                        (2..=lines).contains(&row.line),
                        "line {} of {lines}",
                        row.line
                    );
                    if let Some(url) = stream_url(row, &mut Vec::new()) {
                        let parsed = url::Url::parse(&url);
                        if row.get("url").is_empty() {
                            let parsed = parsed.expect("a URL made from a host parses");
                            assert_eq!(parsed.scheme(), "rtsp");
                            assert!(parsed.username().is_empty(), "{url}");
                        }
                    }
                }
                for checked in check_rows(&rows, text, Path::new("c.toml"), &dirs, &config) {
                    match checked.result {
                        Ok((camera, entry)) => {
                            assert!(entry.contains(&camera.id));
                            cameras += 1;
                        }
                        Err(problems) => {
                            assert!(!problems.is_empty());
                            refused += 1;
                        }
                    }
                }
            },
        );
        assert!(
            cameras > 50 && refused > 50,
            "{cameras} cameras, {refused} refused"
        );
    }

    /// `text` parsed as `c.toml`, with an empty stand-in for the fire model in a model
    /// folder that lives as long as the first value.
    fn parsed(text: &str) -> (tempfile::TempDir, [PathBuf; 1], Config) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fire_smoke_yolov8.onnx"), b"").unwrap();
        let dirs = [dir.path().to_owned()];
        let config = Config::parse(text, Path::new("c.toml"), &dirs)
            .unwrap()
            .config;
        (dir, dirs, config)
    }

    #[test]
    fn rows_checked_together_get_their_own_problems_and_cameras() {
        let text = concat!(
            "[node]\nid = \"n\"\n",
            include_str!("../fixtures/config/grids.toml"),
            include_str!("../fixtures/config/fire.toml"),
            "\n[[cameras]]\nid = \"32132200131320000001\"\nname = \"北门\"\nkind = \"sharp-eyes\"\n",
            "url = \"rtsp://10.0.0.1/1\"\ngrid = \"321322-001-003-07\"\nhazards = [\"fire\"]\n",
        );
        let (_models, dirs, config) = parsed(text);
        let rows = read_csv(concat!(
            "id,name,unit,grid,hazards,url,credentials\n",
            "32132200531320000002,甲,甲店,321322-001-003-07,fire,rtsp://10.0.0.2/1,\n",
            "32132200131320000001,乙,乙店,321322-001-003-07,fire,rtsp://10.0.0.3/1,\n",
            "32132200531320000004,丙,丙店,321322-001-003-07,flood,rtsp://10.0.0.4/1,\n",
            "32132200531320000005,丁,丁店,321322-001-003-07,fire,rtsp://10.0.0.5/1,nobody\n",
            "32132200531320000006,戊,戊店,321322-001-003-07,fire,rtsp://10.0.0.6/1,\n",
        ))
        .unwrap();
        let checked = check_rows(&rows, text, Path::new("c.toml"), &dirs, &config);
        let columns = |i: usize| -> Vec<String> {
            match &checked[i].result {
                Ok(_) => Vec::new(),
                Err(p) => p.iter().map(|(c, m)| format!("{c}: {m}")).collect(),
            }
        };
        for (i, id, name) in [
            (0, "32132200531320000002", "甲"),
            (4, "32132200531320000006", "戊"),
        ] {
            let (camera, entry) = checked[i].result.as_ref().expect("a good row passes");
            assert_eq!((camera.id.as_str(), camera.name.as_str()), (id, name));
            assert!(entry.contains(id));
        }
        assert!(
            columns(1)[0].starts_with("id: duplicate id"),
            "an id the configuration has: {:?}",
            columns(1)
        );
        assert!(
            columns(2).iter().all(|c| c.starts_with("hazards: ")) && !columns(2).is_empty(),
            "{:?}",
            columns(2)
        );
        assert!(
            columns(3).iter().all(|c| c.starts_with("credentials: ")) && !columns(3).is_empty(),
            "{:?}",
            columns(3)
        );
    }

    #[test]
    fn the_header_is_checked_and_rows_keep_their_lines() {
        let err = read_csv("name,grid,url,colour\n").unwrap_err();
        assert!(err.contains("column 4: `colour` is not a column"), "{err}");
        assert!(
            read_csv("url,grid\n")
                .unwrap_err()
                .contains("no `name` column")
        );
        let rows = read_csv("\u{feff}Name,GRID,url\n\"a, b\",g,rtsp://x/1\n\nc,g\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].get("name"),
            "a, b",
            "quoted, and the header's case ignored"
        );
        assert_eq!((rows[1].line, rows[1].ragged), (4, Some((2, 3))));
    }
}
