//! `sharpeyes export`: the alerts operators judged, written out as a YOLO dataset so the
//! models can be fine-tuned on a county's own false alarms (and confirmed hazards).
//!
//! ```text
//! DIR/images/{alert_id}.jpg    the confirming frame, without the snapshot's drawn boxes
//! DIR/labels/{alert_id}.txt    one `class cx cy w h` line per box, normalised to 0..1
//! DIR/data.yaml                the class names by index (Ultralytics' dataset file)
//! DIR/manifest.jsonl           one JSON line per alert: camera, hazard, verdict, note, boxes
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sharpeyes_alerts::{JudgedAlert, StateStore, Verdict};
use sharpeyes_config::Config;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Only alerts with this verdict; every judged alert when `None`.
    pub verdict: Option<Verdict>,
    pub hazard: Option<String>,
    pub since: SystemTime,
    /// False alarms' label files left empty: background images that teach a model there was
    /// nothing to find (their boxes stay in the manifest).
    pub background: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub alerts: usize,
    pub boxes: usize,
    /// Judged alerts that matched but whose frame was no longer kept (or never was: a
    /// sensor alert), that had no frame size to scale their boxes by, or whose id is not an
    /// alert id.
    pub without_frame: usize,
}

/// Reads the judged alerts of `store` that `request` asks for and writes them into `dir`,
/// which must not exist yet or be empty.
pub async fn export(
    config: &Config,
    store: &dyn StateStore,
    request: &ExportRequest,
    dir: &Path,
) -> Result<Exported, String> {
    prepare(dir, &["images", "labels"])?;
    let judged = store
        .judged_since(request.since)
        .await
        .map_err(|e| format!("cannot read the judged alerts: {e}"))?;
    let wanted = judged.into_iter().filter(|j| {
        request.verdict.is_none_or(|v| j.ack.verdict == Some(v))
            && (request.hazard.as_ref()).is_none_or(|h| *h == j.alert.hazard)
    });
    let mut names = class_names(config);
    let mut manifest = String::new();
    let mut done = Exported {
        alerts: 0,
        boxes: 0,
        without_frame: 0,
    };
    for j in wanted {
        // Ids name the files: one that is not a ULID (from whoever else writes to Redis)
        // could name a path outside DIR.
        if !sharpeyes_alerts::is_alert_id(&j.alert.id) {
            tracing::warn!("a judged alert whose id is not an alert id is skipped");
            done.without_frame += 1;
            continue;
        }
        let frame = (store.judged_frame(&j.alert.id).await)
            .map_err(|e| format!("cannot read the frame of alert {}: {e}", j.alert.id))?;
        let (Some(jpeg), Some(size)) = (frame, j.alert.frame) else {
            done.without_frame += 1;
            continue;
        };
        let id = &j.alert.id;
        let empty = request.background && j.ack.verdict == Some(Verdict::FalseAlarm);
        let mut label = String::new();
        if !empty {
            for b in &j.alert.boxes {
                let class = class_index(&mut names, &b.class);
                let [x1, y1, x2, y2] = b.in_frame(size).map(|v| v.clamp(0.0, 1.0));
                let _ = writeln!(
                    label,
                    "{class} {:.6} {:.6} {:.6} {:.6}",
                    (x1 + x2) / 2.0,
                    (y1 + y2) / 2.0,
                    x2 - x1,
                    y2 - y1
                );
                done.boxes += 1;
            }
        }
        write(&dir.join("images").join(format!("{id}.jpg")), &jpeg)?;
        write(
            &dir.join("labels").join(format!("{id}.txt")),
            label.as_bytes(),
        )?;
        manifest.push_str(&manifest_line(&j, empty));
        manifest.push('\n');
        done.alerts += 1;
    }
    write(&dir.join("manifest.jsonl"), manifest.as_bytes())?;
    write(&dir.join("data.yaml"), data_yaml(&names).as_bytes())?;
    Ok(done)
}

/// Class names by index: the classes of the configured models in their order (so a
/// model's own indices hold when one model's hazards are exported), then any other class
/// a box names ([`class_index`]), as met.
fn class_names(config: &Config) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for m in &config.models {
        for c in &m.classes {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
    }
    names
}

/// `class`'s index in `names`, added at the end when it is not there.
fn class_index(names: &mut Vec<String>, class: &str) -> usize {
    names.iter().position(|c| c == class).unwrap_or_else(|| {
        names.push(class.to_owned());
        names.len() - 1
    })
}

fn manifest_line(j: &JudgedAlert, background: bool) -> String {
    let a = &j.alert;
    serde_json::json!({
        "id": a.id,
        "image": format!("images/{}.jpg", a.id),
        "label": format!("labels/{}.txt", a.id),
        "background": background,
        "camera": a.camera.as_ref().map(|c| &c.id),
        "grid": a.grid.id,
        "hazard": a.hazard,
        "confidence": a.confidence,
        "detected_at": a.detected_at,
        "frame": a.frame,
        "boxes": a.boxes,
        "verdict": j.ack.verdict,
        "note": j.ack.note,
        "by": j.ack.by,
        "judged_at": j.ack.at,
    })
    .to_string()
}

/// Ultralytics' dataset file: the images beside it, the names by index.
fn data_yaml(names: &[String]) -> String {
    let mut yaml = String::from(
        "# Written by `sharpeyes export`: the judged alerts' frames and boxes.\npath: .\ntrain: images\nval: images\nnames:\n",
    );
    for (i, n) in names.iter().enumerate() {
        // JSON strings are valid YAML scalars, and keep any odd class name quoted.
        let _ = writeln!(yaml, "  {i}: {}", serde_json::Value::from(n.as_str()));
    }
    yaml
}

/// Makes `dir` with the sub-directories `subs`; refuses a directory that has anything in
/// it, so that one output never mixes with or overwrites another.
pub(crate) fn prepare(dir: &Path, subs: &[&str]) -> Result<(), String> {
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} is not empty: write into a new directory",
            dir.display()
        ));
    }
    for sub in subs {
        let path: PathBuf = dir.join(sub);
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sharpeyes_alerts::{Ack, Alert, MemoryStore};

    use super::*;

    const CONFIG: &str = concat!(
        "[node]\nid = \"n\"\n",
        include_str!("../fixtures/config/grids.toml"),
        include_str!("../fixtures/config/fire.toml"),
    );

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fire_smoke_yolov8.onnx"), b"").unwrap();
        let dirs = [dir.path().to_owned()];
        let loaded = Config::parse(CONFIG, Path::new("test.toml"), &dirs);
        loaded.unwrap_or_else(|p| panic!("{p}")).config
    }

    /// A judged alert on a 1000x500 frame with these (class, box) boxes.
    fn judged(id: &str, verdict: Verdict, boxes: &[(&str, [f32; 4])]) -> JudgedAlert {
        let alert: Alert = serde_json::from_value(serde_json::json!({
            "schema": sharpeyes_alerts::SCHEMA, "id": id, "hazard": "fire",
            "severity": "critical", "confidence": 0.9, "source": "video",
            "camera": {"id": "cam-1", "name": "cam", "kind": "social-unit", "unit": null},
            "grid": {"id": "321322-001-003-07", "path": [], "centre": null},
            "region_code": null, "detected_at": "2026-12-04T10:00:00Z",
            "frame": {"width": 1000, "height": 500},
            "boxes": boxes.iter().map(|(class, b)| serde_json::json!({
                "class": class, "score": 0.8, "box": b, "track_id": 1
            })).collect::<Vec<_>>(),
            "zone": null, "snapshot": null, "evidence": [], "escalation_level": 0
        }))
        .unwrap();
        let ack = Ack {
            alert_id: id.into(),
            by: Some("李四".into()),
            at: "2026-12-04T10:01:00Z".into(),
            time_to_ack_ms: 60_000,
            grid: None,
            verdict: Some(verdict),
            note: Some("夕阳照在玻璃上".into()),
        };
        JudgedAlert { alert, ack }
    }

    /// Ids a second apart from now, so that they are in `since` order.
    fn id(n: u64) -> String {
        let t = SystemTime::now() - Duration::from_secs(100 - n);
        ulid::Ulid::from_datetime(t).to_string()
    }

    async fn store() -> (MemoryStore, [String; 3]) {
        let store = MemoryStore::new();
        let ids = [id(1), id(2), id(3)];
        let ttl = Duration::from_secs(3600);
        let sunset = judged(
            &ids[0],
            Verdict::FalseAlarm,
            &[
                ("fire", [100.0, 100.0, 300.0, 400.0]),
                ("flag", [0.0, 0.0, 1000.0, 50.0]),
            ],
        );
        store
            .keep_judged(&sunset, Some(b"jpeg 1"), ttl)
            .await
            .unwrap();
        let real = judged(
            &ids[1],
            Verdict::Confirmed,
            &[("fire", [500.0, 250.0, 600.0, 500.0])],
        );
        store
            .keep_judged(&real, Some(b"jpeg 2"), ttl)
            .await
            .unwrap();
        let frameless = judged(
            &ids[2],
            Verdict::FalseAlarm,
            &[("fire", [1.0, 1.0, 2.0, 2.0])],
        );
        store.keep_judged(&frameless, None, ttl).await.unwrap();
        (store, ids)
    }

    fn request(verdict: Option<Verdict>, background: bool) -> ExportRequest {
        ExportRequest {
            verdict,
            hazard: None,
            since: SystemTime::now() - Duration::from_secs(3600),
            background,
        }
    }

    #[tokio::test]
    async fn false_alarms_export_as_yolo_labels_that_match_their_boxes() {
        let (store, ids) = store().await;
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("set");
        let req = request(Some(Verdict::FalseAlarm), false);
        let done = export(&config(), &store, &req, &dir).await.unwrap();
        assert_eq!(
            done,
            Exported {
                alerts: 1,
                boxes: 2,
                without_frame: 1
            }
        );
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
        // fire is the fire model's class 1; `flag`, no model's, comes after its classes.
        assert_eq!(
            read(&format!("labels/{}.txt", ids[0])),
            "1 0.200000 0.500000 0.200000 0.600000\n2 0.500000 0.050000 1.000000 0.100000\n"
        );
        assert_eq!(
            std::fs::read(dir.join(format!("images/{}.jpg", ids[0]))).unwrap(),
            b"jpeg 1"
        );
        assert!(
            read("data.yaml").ends_with("names:\n  0: \"smoke\"\n  1: \"fire\"\n  2: \"flag\"\n")
        );
        let line: serde_json::Value = serde_json::from_str(read("manifest.jsonl").trim()).unwrap();
        assert_eq!(line["id"], ids[0].as_str());
        assert_eq!(line["note"], "夕阳照在玻璃上");
        assert_eq!(line["boxes"][1]["class"], "flag");
        assert!(
            !dir.join(format!("images/{}.jpg", ids[1])).exists(),
            "confirmed: not asked for"
        );

        // Again into the same directory: refused, nothing mixed.
        let again = export(&config(), &store, &req, &dir).await.unwrap_err();
        assert!(again.contains("is not empty"), "{again}");
    }

    #[tokio::test]
    async fn background_leaves_false_alarms_unlabelled_and_keeps_the_real_ones() {
        let (store, ids) = store().await;
        let out = tempfile::tempdir().unwrap();
        let done = export(&config(), &store, &request(None, true), out.path())
            .await
            .unwrap();
        assert_eq!((done.alerts, done.boxes, done.without_frame), (2, 1, 1));
        let label = |id: &str| std::fs::read_to_string(out.path().join(format!("labels/{id}.txt")));
        assert_eq!(label(&ids[0]).unwrap(), "", "a false alarm: background");
        assert_eq!(
            label(&ids[1]).unwrap(),
            "1 0.550000 0.750000 0.100000 0.500000\n"
        );
        let manifest = std::fs::read_to_string(out.path().join("manifest.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = manifest
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["background"], true);
        assert_eq!(
            lines[0]["boxes"].as_array().unwrap().len(),
            2,
            "boxes stay in the manifest"
        );
        assert_eq!(lines[1]["verdict"], "confirmed");
    }
}
