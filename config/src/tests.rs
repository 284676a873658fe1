//! Parsing, validation messages (exact field path and line) and derived values.

use std::path::{Path, PathBuf};

use super::*;
use crate::schema::{CameraKind, GridLevel};

/// A models directory holding empty files with the names the shipped configs use, so the
/// tests do not depend on `make setup` having run.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "fire_smoke_yolov8.onnx",
        "fire_smoke_yolov8_int8.onnx",
        "person_fall_yolov8s.onnx",
        "person_fall_yolov8s_int8.onnx",
        "ssdlite_person.onnx",
    ] {
        std::fs::write(dir.path().join(f), b"").unwrap();
    }
    dir
}

fn parse(text: &str) -> Result<Loaded, Problems> {
    let models = model_dir();
    Config::parse(text, Path::new("test.toml"), &[models.path().to_owned()])
}

/// (field path, message, hint) of the first error.
fn first_error(text: &str) -> (String, String, String) {
    let problems = parse(text).expect_err("the config should be refused");
    let p = problems.errors().next().expect("an error");
    (
        p.path.to_string(),
        p.message.clone(),
        p.hint.clone().unwrap_or_default(),
    )
}

fn errors(text: &str) -> Vec<(usize, String, String)> {
    let problems = parse(text).expect_err("the config should be refused");
    problems
        .errors()
        .map(|p| {
            (
                p.position.map_or(0, |pos| pos.line),
                p.path.to_string(),
                p.message.clone(),
            )
        })
        .collect()
}

const BASE: &str = r#"
[[grids]]
id = "321322"
name = "沭阳县"
centre = "县中心"

[[grids]]
id = "321322-001"
name = "沭城街道"
centre = "街道中心"

[[models]]
name = "fire_smoke"
path = "fire_smoke_yolov8.onnx"
layout = "yolov8"
input_size = 320
classes = ["smoke", "fire"]

[[hazards]]
name = "fire"
model = "fire_smoke"
classes = ["fire"]
severity = "critical"
"#;

#[test]
fn shipped_configs_load_without_errors_or_warnings() {
    let models = model_dir();
    let dirs = [models.path().to_owned()];
    for (name, text) in [
        ("demo.toml", DEMO_TOML),
        (
            "example-county.toml",
            include_str!("../example-county.toml"),
        ),
        (
            "ops/k8s/sharpeyes.toml",
            include_str!("../../ops/k8s/sharpeyes.toml"),
        ),
    ] {
        let loaded = Config::parse(text, Path::new(name), &dirs)
            .unwrap_or_else(|p| panic!("{name} does not load:\n{p}"));
        assert!(
            loaded.warnings.items.is_empty(),
            "{name}:\n{}",
            loaded.warnings
        );
        assert!(!loaded.config.cameras.is_empty() && !loaded.config.hazards.is_empty());
    }
}

#[test]
fn the_example_county_is_a_full_hierarchy() {
    let models = model_dir();
    let c = Config::parse(
        include_str!("../example-county.toml"),
        Path::new("x.toml"),
        &[models.path().to_owned()],
    )
    .unwrap()
    .config;
    let names: Vec<&str> = c
        .grid_path("321322-103-012-02")
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, ["沭阳县", "胡集镇", "胡集村", "胡集村第二网格"]);
    // The toll-station camera has no grid: its GB/T 28181 id puts it under the county.
    let toll = c.camera("32132200001320000900").unwrap();
    assert_eq!(toll.grid(), "321322");
    assert_eq!(
        toll.device_id.as_ref().unwrap().province_name(),
        Some("江苏省")
    );
    assert_eq!(c.model("person_ssd").unwrap().layout, ModelLayout::Ssd);
    assert_eq!(
        c.cameras
            .iter()
            .filter(|c| c.kind == CameraKind::SocialUnit)
            .count(),
        5
    );
}

#[test]
fn the_broken_fixture_reports_every_problem_with_its_line() {
    let text = include_str!("../testdata/broken.toml");
    let problems = parse(text).expect_err("broken.toml must be refused");
    let got: Vec<(usize, String)> = problems
        .items
        .iter()
        .map(|p| (p.position.unwrap().line, p.path.to_string()))
        .collect();
    let expected = [
        (9, "grids[1].id"),
        (15, "models[0].path"),
        (17, "models[0].input_size"),
        (23, "hazards[0].classes[0]"),
        (25, "hazards[0].confirm"),
        (31, "cameras[0].url"),
        (32, "cameras[0].grid"),
        (33, "cameras[0].hazards[1]"),
        (35, "cameras[1].unit"),
        (36, "cameras[1].id"),
        (38, "cameras[1].kind"),
        (39, "cameras[1].url"),
        (41, "cameras[1].zones[0].polygon"),
        (48, "cameras[2].grdi"),
        (53, "cameras[3].kind"),
        (56, "sensor"),
    ];
    let expected: Vec<(usize, String)> =
        expected.iter().map(|(l, p)| (*l, p.to_string())).collect();
    assert_eq!(got, expected, "\n{problems}");
    // Every marked line of the fixture is reported.
    let marked: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("# <-"))
        .map(|(i, _)| i + 1)
        .collect();
    let reported: Vec<usize> = got.iter().map(|(l, _)| *l).collect();
    assert_eq!(marked, reported);
    assert_eq!(problems.errors().count(), 14);
    assert_eq!(problems.warnings().count(), 2);
}

#[test]
fn messages_carry_hints() {
    let problems = parse(include_str!("../testdata/broken.toml")).unwrap_err();
    let hint = |path: &str| {
        problems
            .items
            .iter()
            .find(|p| p.path.to_string() == path)
            .and_then(|p| p.hint.clone())
            .unwrap_or_default()
    };
    assert_eq!(hint("cameras[2].grdi"), "did you mean `grid`?");
    assert_eq!(hint("sensor"), "did you mean `sensors`?");
    assert_eq!(hint("cameras[3].kind"), "did you mean `sharp-eyes`?");
    assert!(hint("grids[1].id").contains("id = \"321322-001-003\""));
    let shown = problems.to_string();
    assert!(
        shown.contains(
            "test.toml:41:27: error: cameras[1].zones[0].polygon: zone `bank` has 2 point(s)"
        ),
        "{shown}"
    );
    assert!(
        !shown.contains("hunter2"),
        "a literal password leaked into the report:\n{shown}"
    );
}

#[test]
fn a_missing_field_points_at_its_table() {
    let text = format!(
        "{BASE}\n[[cameras]]\nid = \"c1\"\nname = \"x\"\nkind = \"sharp-eyes\"\ngrid = \"321322\"\n"
    );
    let header = text.lines().position(|l| l == "[[cameras]]").unwrap() + 1;
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, "cameras[0]");
    assert!(e[0].2.contains("missing field `url`"), "{e:?}");
    assert!(
        e[0].0 >= header && e[0].0 <= header + 5,
        "{e:?} (header on line {header})"
    );
}

#[test]
fn a_syntax_error_names_its_line() {
    let e = errors("[[grids]]\nid = \"1\"\nname = \n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, 3, "{e:?}");
}

#[test]
fn grid_levels_and_parents_come_from_dashed_ids() {
    let text =
        format!("{BASE}\n[[grids]]\nid = \"321322-001-003\"\nname = \"v\"\ncentre = \"c\"\n");
    let c = parse(&text).unwrap().config;
    let v = c.grid("321322-001-003").unwrap();
    assert_eq!(v.level, Some(GridLevel::Village));
    assert_eq!(v.parent.as_deref(), Some("321322-001"));
    assert_eq!(c.grid("321322").unwrap().parent, None);
}

#[test]
fn a_parent_must_be_one_level_up() {
    let text = format!(
        "{BASE}\n[[grids]]\nid = \"v9\"\nname = \"v\"\ncentre = \"c\"\nlevel = \"village\"\nparent = \"321322\"\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, "grids[2].parent");
    assert!(e[0].2.contains("which is a county"), "{e:?}");
    let line = text
        .lines()
        .position(|l| l == "parent = \"321322\"")
        .unwrap()
        + 1;
    assert_eq!(e[0].0, line);
}

#[test]
fn gb_ids_place_cameras_under_their_county_or_say_why_not() {
    let cam = |id: &str| {
        format!(
            "{BASE}\n[[cameras]]\nid = \"{id}\"\nname = \"x\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://10.0.0.1/x\"\n"
        )
    };
    let c = parse(&cam("32132200001320000007")).unwrap().config;
    assert_eq!(c.cameras[0].grid(), "321322");

    let e = errors(&cam("32010600001320000007")); // 南京 鼓楼区: no such county grid here
    assert_eq!(e[0].1, "cameras[0].grid");
    assert!(e[0].2.contains("county 320106 is not a grid here"), "{e:?}");

    let e = errors(&cam("cam-7"));
    assert!(e[0].2.contains("has no grid"), "{e:?}");

    let e = errors(&cam("99132200001320000007"));
    let id = e
        .iter()
        .find(|(_, path, _)| path == "cameras[0].id")
        .expect("an error at the id");
    assert!(id.2.contains("not a province code"), "{e:?}");
}

#[test]
fn zones_are_checked_and_hazards_default_to_the_zones_a_camera_has() {
    let text = format!(
        "{BASE}\n[[hazards]]\nname = \"river\"\nmodel = \"fire_smoke\"\nclasses = [\"fire\"]\nseverity = \"major\"\nzones = [\"bank\"]\n\n\
         [[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\n\
         zones = [{{ name = \"bank\", polygon = [[0,0],[1,0],[1,1]] }}]\n\n\
         [[cameras]]\nid = \"b\"\nname = \"b\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/b\"\ngrid = \"321322\"\n"
    );
    let c = parse(&text).unwrap().config;
    let watched = |id: &str| -> Vec<String> {
        c.camera_hazards(c.camera(id).unwrap())
            .map(|h| h.name.clone())
            .collect()
    };
    assert_eq!(watched("a"), ["fire", "river"]);
    assert_eq!(watched("b"), ["fire"]);

    let bad = text.replace("[[0,0],[1,0],[1,1]]", "[[0,0],[0.5,0.5],[1,1]]");
    assert!(errors(&bad)[0].2.contains("has no area"));
    let bad = text.replace("[[0,0],[1,0],[1,1]]", "[[0,0],[1.5,0],[1,1]]");
    assert_eq!(errors(&bad)[0].1, "cameras[0].zones[0].polygon[1]");
    let bad = text.replace(
        "url = \"rtsp://h/b\"",
        "url = \"rtsp://h/b\"\nhazards = [\"river\"]",
    );
    assert!(
        errors(&bad)[0].2.contains("has none of them"),
        "{:?}",
        errors(&bad)
    );
}

#[test]
fn secrets_stay_unexpanded_and_unprinted() {
    let text = format!(
        "{BASE}\n[mqtt]\nurl = \"mqtts://b:8883\"\nusername = \"se\"\npassword = \"${{SE_TEST_MQTT_PW}}\"\n\n\
         [[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://admin:${{SE_TEST_CAM_PW}}@10.0.0.9/a\"\ngrid = \"321322\"\n"
    );
    let c = parse(&text).unwrap().config;
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("SE_TEST_CAM_PW") && debug.contains("rtsp://***@10.0.0.9/a"),
        "{debug}"
    );
    let missing: Vec<String> = c
        .check_secrets()
        .unwrap_err()
        .iter()
        .map(|(field, e)| format!("{field}: {e}"))
        .collect();
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].starts_with("mqtt.password: environment variable SE_TEST_MQTT_PW"));
    assert!(
        missing[1].starts_with("cameras[0].url (camera a): environment variable SE_TEST_CAM_PW")
    );

    let e = errors(&text.replace("${SE_TEST_CAM_PW}", "${SE_TEST_CAM_PW"));
    assert_eq!(e[0].1, "cameras[0].url");
    assert!(e[0].2.contains("without a closing"), "{e:?}");
}

#[test]
fn literal_passwords_are_warned_about_and_an_open_api_beyond_loopback_is_refused() {
    let text = format!(
        "{BASE}\n[http]\nlisten = \"0.0.0.0:8080\"\n\n[mqtt]\nurl = \"mqtt://b\"\npassword = \"plain\"\n\n\
         [[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\n"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, "http.listen");
    assert!(e[0].2.contains("with no token"), "{e:?}");
    // With a token (here a role token, written literally: warned about) it may listen.
    let with_token = text.replace(
        "listen = \"0.0.0.0:8080\"",
        "listen = \"0.0.0.0:8080\"\n[[http.tokens]]\ntoken = \"t0k3n\"\nrole = \"viewer\"",
    );
    let loaded = parse(&with_token).unwrap();
    let w: Vec<String> = loaded
        .warnings
        .warnings()
        .map(|p| p.path.to_string())
        .collect();
    assert_eq!(
        w,
        [
            "http.allowed_hosts",
            "http.tokens[0]",
            "mqtt.password",
            "mqtt.password"
        ]
    );
    let roles: Vec<_> = loaded.config.http.all_tokens().map(|(_, r)| r).collect();
    assert_eq!(roles, [crate::schema::Role::Viewer]);
}

#[test]
fn ids_are_short_topic_safe_words_and_names_are_bounded() {
    let cam = |id: &str, name: &str| {
        format!(
            "{BASE}\n[[cameras]]\nid = \"{id}\"\nname = \"{name}\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\n"
        )
    };
    assert!(parse(&cam("32132200001320000001", "北门")).is_ok());
    assert!(parse(&cam(&"a".repeat(64), "ok")).is_ok());
    // 65,600 bytes would overflow an MQTT topic (16-bit length) in the status topic.
    for bad in [
        "a".repeat(65),
        "a".repeat(65_600),
        "北门".into(),
        "a b".into(),
        "a/b".into(),
        "a+".into(),
    ] {
        let e = errors(&cam(&bad, "ok"));
        assert_eq!(e[0].1, "cameras[0].id", "{bad:.20}: {e:?}");
        assert!(
            e[0].2.len() < 300,
            "the message does not echo a huge id: {}",
            e[0].2.len()
        );
    }
    let e = errors(&cam("a", &"名".repeat(100)));
    assert_eq!(e[0].1, "cameras[0].name");
    assert!(e[0].2.contains("300 bytes"), "{e:?}");
}

#[test]
fn cameras_may_name_a_login_defined_once() {
    let text = format!(
        "{BASE}\n[credentials.hik]\nuser = \"admin\"\npassword = \"${{SE_TEST_HIK}}\"\n\n\
         [[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://10.0.0.9/a\"\ngrid = \"321322\"\ncredentials = \"hik\"\n"
    );
    let c = parse(&text).unwrap().config;
    let login = c.cameras[0].login.as_ref().expect("resolved");
    assert_eq!(login.user.expand().unwrap(), "admin");
    assert!(
        c.secrets()
            .iter()
            .any(|(field, _)| field == "credentials.hik.password"),
        "checked at start-up like every secret"
    );
    let (path, _, hint) =
        first_error(&text.replace("credentials = \"hik\"", "credentials = \"hk\""));
    assert_eq!(path, "cameras[0].credentials");
    assert!(hint.contains("did you mean `hik`"), "{hint}");
    let (path, _, hint) =
        first_error(&text.replace("rtsp://10.0.0.9/a", "rtsp://root:pw@10.0.0.9/a"));
    assert_eq!(path, "cameras[0].url");
    assert!(hint.contains("one place"), "{hint}");

    // A login bound to its networks goes only to addresses inside them: not to another
    // address, and not to a name, which could resolve anywhere.
    let bound = text.replace(
        "password = \"${SE_TEST_HIK}\"\n",
        "password = \"${SE_TEST_HIK}\"\nnetworks = [\"10.0.0.0/24\", \"fd00::/8\"]\n",
    );
    assert!(parse(&bound).is_ok());
    assert!(parse(&bound.replace("rtsp://10.0.0.9/a", "rtsp://[fd00::9]/a")).is_ok());
    for host in ["10.0.1.9", "cam.example", "127.0.0.1"] {
        let (path, message, hint) = first_error(&bound.replace("10.0.0.9/a", &format!("{host}/a")));
        assert_eq!(path, "cameras[0].url");
        assert!(
            message.contains(&format!("login `hik` to {host}")),
            "{message}"
        );
        assert!(hint.contains("credentials.hik.networks"), "{hint}");
    }
    let (path, message, _) = first_error(&bound.replace("10.0.0.0/24", "10.0.0.0/33"));
    assert!(path.starts_with("credentials"), "{path}: {message}");
}

#[test]
fn sampling_accepts_words_and_fps() {
    let cam = |s: &str| {
        format!(
            "{BASE}\n[[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\nsampling = {s}\n"
        )
    };
    assert_eq!(
        parse(&cam("\"all\"")).unwrap().config.cameras[0].sampling,
        Sampling::All
    );
    assert_eq!(
        parse(&cam("{ fps = 2 }")).unwrap().config.cameras[0].sampling,
        Sampling::Fps(2.0)
    );
    let e = errors(&cam("\"every\""));
    assert_eq!(e[0].1, "cameras[0].sampling");
    assert!(e[0].2.contains("unknown sampling `every`"), "{e:?}");
    assert!(errors(&cam("{ fps = 0 }"))[0].2.contains("not in (0, 120]"));
}

#[test]
fn durations_are_human() {
    let text = BASE.replace(
        "severity = \"critical\"",
        "severity = \"critical\"\ncooldown = \"1h 30m\"",
    );
    let c = parse(&text).unwrap().config;
    assert_eq!(c.hazards[0].cooldown, std::time::Duration::from_secs(5400));
    let e = errors(&BASE.replace(
        "severity = \"critical\"",
        "severity = \"critical\"\ncooldown = \"soon\"",
    ));
    assert_eq!(e[0].1, "hazards[0].cooldown");
    assert!(e[0].2.contains("not a duration"));
}

#[test]
fn a_broken_entry_is_not_reported_again_as_an_unknown_reference() {
    // The model fails to deserialize (bad layout); the hazard naming it must not add
    // "unknown model" on top.
    let e = errors(&BASE.replace("layout = \"yolov8\"", "layout = \"yolo\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, "models[0].layout");
}

#[test]
fn model_paths_resolve_beside_the_config_then_in_the_models_dir() {
    let cfg_dir = tempfile::tempdir().unwrap();
    std::fs::write(cfg_dir.path().join("fire_smoke_yolov8.onnx"), b"").unwrap();
    let models = model_dir();
    let origin: PathBuf = cfg_dir.path().join("site.toml");
    let c = Config::parse(BASE, &origin, &[models.path().to_owned()])
        .unwrap()
        .config;
    assert_eq!(
        c.models[0].path,
        cfg_dir.path().join("fire_smoke_yolov8.onnx")
    );
    let c = Config::parse(
        BASE,
        Path::new("elsewhere/site.toml"),
        &[models.path().to_owned()],
    )
    .unwrap()
    .config;
    assert_eq!(
        c.models[0].path,
        models.path().join("fire_smoke_yolov8.onnx")
    );
}

#[test]
fn int8_precision_picks_the_quantized_sibling_or_says_how_to_make_it() {
    let int8 = BASE.replace(
        "layout = \"yolov8\"",
        "layout = \"yolov8\"\nprecision = \"int8\"",
    );
    let models = tempfile::tempdir().unwrap();
    for f in ["fire_smoke_yolov8.onnx", "ssdlite_person.onnx"] {
        std::fs::write(models.path().join(f), b"").unwrap();
    }
    let dirs = [models.path().to_owned()];

    // No sibling yet: refused at the field, naming the file and `make setup`.
    let problems = Config::parse(&int8, Path::new("elsewhere/site.toml"), &dirs).unwrap_err();
    let p = problems.errors().next().unwrap();
    assert_eq!(p.path.to_string(), "models[0].precision");
    assert!(
        p.message.contains("fire_smoke_yolov8_int8.onnx"),
        "{}",
        p.message
    );
    assert!(p.hint.as_deref().unwrap().contains("make setup"), "{p:?}");

    std::fs::write(models.path().join("fire_smoke_yolov8_int8.onnx"), b"").unwrap();
    let c = Config::parse(&int8, Path::new("elsewhere/site.toml"), &dirs)
        .unwrap()
        .config;
    assert_eq!(c.models[0].precision, Precision::Int8);
    assert_eq!(
        c.models[0].path,
        models.path().join("fire_smoke_yolov8_int8.onnx")
    );
    // The default stays the float file.
    let c = Config::parse(BASE, Path::new("elsewhere/site.toml"), &dirs)
        .unwrap()
        .config;
    assert_eq!(
        c.models[0].path,
        models.path().join("fire_smoke_yolov8.onnx")
    );

    // Only yolov8 models have an INT8 version; an unknown precision names the field.
    let ssd = int8
        .replace("fire_smoke_yolov8.onnx", "ssdlite_person.onnx")
        .replace("layout = \"yolov8\"", "layout = \"ssd\"");
    let (path, message, hint) = first_error(&ssd);
    assert_eq!(path, "models[0].precision");
    assert!(message.contains("ssd"), "{message}");
    assert!(hint.contains("float"), "{hint}");
    let e = errors(&BASE.replace(
        "layout = \"yolov8\"",
        "layout = \"yolov8\"\nprecision = \"fp4\"",
    ));
    assert_eq!(e[0].1, "models[0].precision", "{e:?}");
}

#[test]
fn alerts_section_sets_snapshot_handling_and_names_bad_fields() {
    let defaults = parse(BASE).unwrap().config.alerts;
    assert!(!defaults.inline_snapshots);
    assert_eq!(defaults.snapshot_max_bytes, 200 * 1024);

    let text = format!(
        "{BASE}\n[alerts]\ninline_snapshots = true\nsnapshot_max_bytes = 65536\nsnapshot_ttl = \"2d\"\n"
    );
    let alerts = parse(&text).unwrap().config.alerts;
    assert!(alerts.inline_snapshots);
    assert_eq!(alerts.snapshot_max_bytes, 65536);
    assert_eq!(
        alerts.snapshot_ttl,
        std::time::Duration::from_secs(2 * 24 * 3600)
    );

    let text = format!("{BASE}\n[alerts]\ninline_snapshot = true\n");
    let errs = errors(&text);
    assert!(
        errs.iter().any(|(line, path, msg)| *line > 0
            && path == "alerts.inline_snapshot"
            && msg.contains("expected one of `inline_snapshots`")),
        "{errs:?}"
    );
    let text = format!("{BASE}\n[alerts]\nsnapshot_max_bytes = 100\n");
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|(_, path, _)| path == "alerts.snapshot_max_bytes"),
        "{errs:?}"
    );
}

#[test]
fn sensors_name_their_hazard_and_what_verifies_them() {
    let sensors = r#"
[[sensors]]
id = "smoke-1"
type = "smoke"
unit = "%obs/m"
grid = "321322-001"
above = 4.0

[[sensors]]
id = "gas-1"
type = "gas"
unit = "%LEL"
grid = "321322-001"
above = 20.0
verified_by = ["fire"]

[fusion]
wait = "5s"

[motion]
forced_interval = "30s"
"#;
    let c = parse(&format!("{BASE}{sensors}")).unwrap().config;
    assert_eq!(c.sensors[0].hazard_name(), "fire");
    assert_eq!(c.sensors[0].verifying_hazards(), ["fire", "smoke"]);
    assert_eq!(c.sensors[1].hazard_name(), "gas-leak");
    assert_eq!(c.sensors[1].verifying_hazards(), ["fire"]);
    assert_eq!(c.fusion.wait, std::time::Duration::from_secs(5));
    assert_eq!(c.fusion.verify_for, std::time::Duration::from_secs(120));
    assert!(c.motion.enabled);
    assert_eq!(c.motion.forced_interval, std::time::Duration::from_secs(30));
    // Quiet keyframes are decoded unless asked; skipped ones still come every 30 s.
    assert_eq!(c.motion.skip_quiet(), None);
    let skipping = sensors.replace(
        "forced_interval = \"30s\"",
        "forced_interval = \"30s\"\nskip_quiet_keyframes = true",
    );
    let c = parse(&format!("{BASE}{skipping}")).unwrap().config;
    assert_eq!(
        c.motion.skip_quiet(),
        Some(std::time::Duration::from_secs(30))
    );
    // A string where a switch belongs is named with its line, not taken as "on".
    let errs = errors(&format!(
        "{BASE}{}",
        skipping.replace(
            "skip_quiet_keyframes = true",
            "skip_quiet_keyframes = \"yes\""
        )
    ));
    assert!(
        errs.iter().any(|(line, path, msg)| *line > 0
            && path == "motion.skip_quiet_keyframes"
            && msg.contains("expected a boolean")),
        "{errs:?}"
    );

    let bad = sensors
        .replace(
            "verified_by = [\"fire\"]",
            "verified_by = [\"fier\"]\nhazard = \"gas leak\"",
        )
        .replace("wait = \"5s\"", "wait = \"1h\"")
        .replace("forced_interval = \"30s\"", "forced_interval = \"0s\"");
    let errs = errors(&format!("{BASE}{bad}"));
    for (field, says) in [
        ("sensors[1].verified_by[0]", "unknown hazard `fier`"),
        ("sensors[1].hazard", "cannot be used in MQTT topics"),
        ("fusion.wait", "too long"),
        ("motion.forced_interval", "not in 1s..=10m"),
    ] {
        assert!(
            errs.iter()
                .any(|(line, path, msg)| *line > 0 && path == field && msg.contains(says)),
            "no `{says}` at {field}: {errs:?}"
        );
    }
}

#[test]
fn tls_files_need_a_tls_url_and_a_clear_redis_password_beyond_the_host_is_warned_about() {
    let camera = "[[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\n";
    let with = |redis: &str| format!("{BASE}\n[redis]\n{redis}\n\n{camera}");
    // TLS files on a plain URL: refused, naming the field.
    let e = errors(&with(
        "url = \"redis://127.0.0.1:6379/0\"\nca_file = \"/etc/ca.pem\"",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, "redis.ca_file");
    assert!(e[0].2.contains("only over TLS"), "{e:?}");
    // A client certificate without its key.
    let (path, message, _) = first_error(&with(
        "url = \"rediss://127.0.0.1:6380/0\"\ncert_file = \"/etc/client.pem\"",
    ));
    assert_eq!(path, "redis.key_file");
    assert!(message.contains("both cert_file and key_file"), "{message}");
    // The same rules for the broker's files.
    let text = format!(
        "{BASE}\n[mqtt]\nurl = \"mqtt://127.0.0.1\"\ncert_file = \"/c.pem\"\nkey_file = \"/c.key\"\n\n{camera}"
    );
    let fields: Vec<String> = errors(&text).into_iter().map(|e| e.1).collect();
    assert_eq!(fields, ["mqtt.cert_file", "mqtt.key_file"]);
    // RTSP over TLS: only the GStreamer backend speaks it.
    let rtsps = format!(
        "{BASE}\n[[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsps://10.0.0.9/a\"\ngrid = \"321322\"\n"
    );
    let (path, _, hint) = first_error(&rtsps);
    assert_eq!(path, "cameras[0].url");
    assert!(hint.contains("backend = \"gstreamer\""), "{hint}");
    assert!(parse(&format!("{rtsps}backend = \"gstreamer\"\n")).is_ok());
    // HTTPS on the API: a certificate needs its key.
    let (path, message, _) = first_error(&format!(
        "{BASE}\n[http]\ncert_file = \"/c.pem\"\n\n{camera}"
    ));
    assert_eq!(path, "http.key_file");
    assert!(message.contains("both cert_file and key_file"), "{message}");
    // A password in clear to another host is warned about; to this host, or over TLS, not.
    let warnings = |redis: &str| -> Vec<String> {
        parse(&with(redis))
            .unwrap()
            .warnings
            .warnings()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    };
    let w = warnings("url = \"redis://:${REDIS_PW}@10.2.3.4:6379/0\"");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("redis.url: the Redis password"), "{w:?}");
    assert!(!w[0].contains("REDIS_PW"), "{w:?}");
    assert_eq!(
        warnings("url = \"redis://:${REDIS_PW}@127.0.0.1:6379/0\""),
        Vec::<String>::new()
    );
    assert_eq!(
        warnings(
            "url = \"rediss://:${REDIS_PW}@10.2.3.4:6380/0\"\nca_file = \"/etc/ca.pem\"\ncert_file = \"/etc/c.pem\"\nkey_file = \"/etc/c.key\""
        ),
        Vec::<String>::new()
    );
}

#[test]
fn a_cluster_needs_redis_a_sane_lease_and_its_own_node_id() {
    let camera = "[[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\n";
    let redis = "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n";
    let with = |rest: &str| format!("{BASE}\n{rest}\n{camera}");
    let (path, message, hint) = first_error(&with("[cluster]\n"));
    assert_eq!(path, "cluster");
    assert!(message.contains("needs [redis]"), "{message}");
    assert!(hint.contains("remove [cluster]"), "{hint}");
    // Off: no [redis] needed.
    let off = parse(&with("[cluster]\nenabled = false\n")).unwrap();
    assert!(off.config.cluster().is_none());
    let e = errors(&with(&format!(
        "{redis}[cluster]\nlease = \"1s\"\ncapacity = 0\nzone = \"rack 7\"\n"
    )));
    let fields: Vec<&str> = e.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        fields,
        ["cluster.lease", "cluster.capacity", "cluster.zone"]
    );
    // The default node id is refused by `run` (Overrides::apply); the file alone is fine,
    // since the id may come from SHARPEYES_NODE_ID.
    let loaded = parse(&with(&format!("{redis}[cluster]\nzone = \"rack-7\"\n"))).unwrap();
    assert!(loaded.warnings.items.is_empty(), "{}", loaded.warnings);
    let mut config = loaded.config;
    let cluster = config.cluster().unwrap();
    assert_eq!(cluster.lease, std::time::Duration::from_secs(10));
    assert!(cluster.capacity() >= CAMERAS_PER_CORE);
    let refused = Overrides::default().apply(&mut config).unwrap_err();
    assert!(
        refused.contains("--node-id, SHARPEYES_NODE_ID"),
        "{refused}"
    );
    let named = Overrides {
        node_id: Some("sharpeyes-7f9c".into()),
        ..Overrides::default()
    };
    named.apply(&mut config).unwrap();
    assert_eq!(config.node.id, "sharpeyes-7f9c");
}

#[test]
fn the_readings_section_is_known() {
    let camera = "[[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\n";
    let loaded = parse(&format!(
        "{BASE}\n[readings]\nmax_ahead = \"1m\"\n\n{camera}"
    ))
    .unwrap();
    assert_eq!(
        loaded.config.readings.max_ahead,
        std::time::Duration::from_secs(60)
    );
}

#[test]
fn a_gb28181_platform_needs_real_ids_a_server_address_and_sane_timers() {
    let camera = "[[cameras]]\nid = \"a\"\nname = \"a\"\nkind = \"sharp-eyes\"\nurl = \"rtsp://h/a\"\ngrid = \"321322\"\n";
    let good = "[gb28181]\nserver_id = \"32132200002000000001\"\nserver_domain = \"3213220000\"\nserver = \"udp://127.0.0.1:5060\"\ndevice_id = \"32132200001180000001\"\npassword = \"${GB28181_PASSWORD}\"\n";
    let loaded = parse(&format!("{BASE}\n{good}\n{camera}")).unwrap();
    assert!(loaded.warnings.items.is_empty(), "{}", loaded.warnings);
    let g = loaded.config.gb28181.unwrap();
    assert_eq!(g.expires, std::time::Duration::from_secs(3600));
    assert_eq!(g.keepalive, std::time::Duration::from_secs(60));
    assert_eq!(g.charset, crate::SipCharset::Gb2312);
    assert_eq!(g.listen.port(), 5060);
    assert!(
        parse(&format!(
            "{BASE}\n{}\n{camera}",
            good.replace("udp://", "tcp://")
        ))
        .is_ok()
    );

    let bad = "[gb28181]\nserver_id = \"3213220000200000001\"\nserver_domain = \"32132\"\nserver = \"sip://platform\"\ndevice_id = \"32132200001310000001\"\npassword = \"p\"\nexpires = \"10s\"\nkeepalive = \"1h\"\ncharset = \"UTF-8\"\n";
    let e = errors(&format!("{BASE}\n{bad}\n{camera}"));
    let fields: Vec<&str> = e.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        fields,
        [
            "gb28181.server_id",
            "gb28181.server",
            "gb28181.device_id",
            "gb28181.expires",
            "gb28181.keepalive"
        ],
        "{e:?}"
    );
    assert!(e[2].2.contains("131 (camera)"), "{}", e[2].2);
    let (_, message, hint) = first_error(&format!(
        "{BASE}\n{}\n{camera}",
        good.replace("3213220000\"", "3213229999x\"")
    ));
    assert!(message.contains("10-digit"), "{message}");
    assert!(hint.contains("3213220000"), "{hint}");

    // Alarm types per hazard, and camera locations.
    let mapped = format!(
        "{good}\n[gb28181.alarms.fire]\nmethod = 5\ntype = 2\n\n[gb28181.alarms.flood]\nmethod = 2\n"
    );
    let g = parse(&format!(
        "{BASE}\n{mapped}\n{camera}location = [118.77, 34.13]\n"
    ))
    .unwrap()
    .config;
    let fire = g.gb28181.as_ref().unwrap().alarms["fire"];
    assert_eq!(
        (fire.method, fire.alarm_type, fire.event_type),
        (5, Some(2), None)
    );
    assert_eq!(g.cameras[0].location, Some([118.77, 34.13]));
    let wrong = format!(
        "{good}\n[gb28181.alarms.fire]\nmethod = 9\n\n[gb28181.alarms.crowd]\nmethod = 5\ntype = 13\n"
    );
    let e = errors(&format!(
        "{BASE}\n{wrong}\n{camera}location = [34.13, 118.77]\n"
    ));
    let fields: Vec<&str> = e.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        fields,
        [
            "gb28181.alarms.fire.method",
            "gb28181.alarms.crowd.type",
            "cameras[0].location"
        ],
        "{e:?}"
    );
}

const CAMERA: &str = r#"
[[cameras]]
id = "cam-1"
name = "gate"
kind = "sharp-eyes"
url = "rtsp://127.0.0.1:8554/cam1"
grid = "321322-001"
"#;

#[test]
fn health_limits_default_are_overridden_per_camera_and_checked() {
    let text = format!(
        "{BASE}{CAMERA}\n[cameras.health]\ndark_below = 10.0\nnight = \"18:30-05:00\"\n\n[health]\nhold = \"30s\"\nblurred_ratio = 0.5\n"
    );
    let c = parse(&text).unwrap().config;
    assert_eq!(c.health.hold, std::time::Duration::from_secs(30));
    let cam = &c.cameras[0];
    let t = c.health.thresholds_for(cam);
    assert_eq!(
        (t.dark_below, t.blurred_ratio, t.moved_below),
        (10.0, 0.5, 0.45)
    );
    let night = c.health.night_for(cam).unwrap();
    assert_eq!((night.from, night.to), (18 * 60 + 30, 5 * 60));
    // 22:00 and 04:59 CST are night, 12:00 CST is not (UTC+8: 14:00, 20:59 and 04:00 UTC).
    let utc =
        |h: u64, m: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(h * 3600 + m * 60);
    assert!(night.contains(utc(14, 0)) && night.contains(utc(20, 59)));
    assert!(!night.contains(utc(4, 0)) && !night.contains(utc(21, 0)));

    let e = errors(&format!(
        "{BASE}{CAMERA}\n[cameras.health]\nmoved_below = 1.5\n"
    ));
    assert_eq!(e[0].1, "cameras[0].health.moved_below", "{e:?}");
    let e = errors(&format!("{BASE}\n[health]\ndark_below = 240.0\n"));
    assert_eq!(e[0].1, "health.dark_below", "{e:?}");
    assert!(e[0].2.contains("leave no picture healthy"), "{e:?}");
    let e = errors(&format!("{BASE}\n[health]\nnight = \"dusk\"\n"));
    assert_eq!(e[0].1, "health.night", "{e:?}");
    assert!(e[0].2.contains("HH:MM-HH:MM"), "{e:?}");
    let (path, message, hint) = first_error(&format!("{BASE}\n[health]\nhodl = \"1m\"\n"));
    assert_eq!(path, "health.hodl");
    assert!(
        message.contains("hodl") && hint.contains("hold"),
        "{message} / {hint}"
    );
}

#[test]
fn a_rectangular_input_fits_16_9_cameras_and_a_bad_height_is_named() {
    let c = parse(BASE).unwrap().config;
    assert_eq!(c.model("fire_smoke").unwrap().input_shape(), (320, 320));
    let rect = BASE.replace("input_size = 320", "input_size = 320\ninput_height = 192");
    let c = parse(&rect).unwrap().config;
    assert_eq!(c.model("fire_smoke").unwrap().input_shape(), (320, 192));
    for (height, says) in [
        (
            "200",
            "input_height 200 is not a multiple of 32 in 32..=320",
        ),
        (
            "352",
            "input_height 352 is not a multiple of 32 in 32..=320",
        ),
    ] {
        let errs = errors(&rect.replace("input_height = 192", &format!("input_height = {height}")));
        assert!(
            errs.iter().any(|(line, path, msg)| *line == 17
                && path == "models[0].input_height"
                && msg.contains(says)),
            "{height}: {errs:?}"
        );
    }
}

#[test]
fn departments_take_known_hazards_under_a_topic_of_their_own() {
    let department = |body: &str| format!("{BASE}\n[[dispatch]]\n{body}\n");
    let good = department(
        "name = \"fire-brigade\"\nhazards = [\"fire\"]\ngrid = \"321322-001\"\ntopic = \"sy/dispatch/fire-brigade\"",
    );
    let c = parse(&good).unwrap().config;
    assert_eq!(c.dispatch.len(), 1);
    assert_eq!(
        c.dispatch[0].on,
        crate::DispatchOn::Confirmed,
        "the default"
    );
    assert_eq!(c.dispatch[0].grid.as_deref(), Some("321322-001"));

    let e = errors(&department(
        "name = \"fire-brigade\"\nhazards = [\"fir\"]\ngrid = \"321399\"\ntopic = \"sy/dispatch/#\"\non = \"sometimes\"",
    ));
    let said: Vec<(&str, &str)> = e.iter().map(|(_, p, m)| (p.as_str(), m.as_str())).collect();
    assert!(
        said.iter().any(|(p, _)| *p == "dispatch[0].on"),
        "an unknown `on`: {e:?}"
    );
    let e = errors(&department(
        "name = \"fire-brigade\"\nhazards = [\"fir\"]\ngrid = \"321399\"\ntopic = \"sy/dispatch/#\"",
    ));
    let paths: Vec<&str> = e.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "dispatch[0].hazards[0]",
            "dispatch[0].grid",
            "dispatch[0].topic"
        ],
        "{e:?}"
    );
    assert!(e[0].2.contains("unknown hazard `fir`"), "{e:?}");
    assert!(e[2].2.contains("not a plain topic"), "{e:?}");
    // Under the service's own acknowledgements a dispatched alert would acknowledge itself.
    let (path, message, hint) = first_error(&department(
        "name = \"fire-brigade\"\nhazards = [\"fire\"]\ntopic = \"sharpeyes/acks/fire\"",
    ));
    assert_eq!(path, "dispatch[0].topic");
    assert!(message.contains("under `sharpeyes/acks`"), "{message}");
    assert!(hint.contains("sharpeyes/dispatch/fire-brigade"), "{hint}");
    let (path, _, _) = first_error(&department(
        "name = \"fire-brigade\"\nhazards = [\"fire\"]\ntopic = \"sy//fire\"",
    ));
    assert_eq!(path, "dispatch[0].topic");
}

#[test]
fn keyframe_decoders_default_to_the_cores_and_are_bounded() {
    assert_eq!(parse(BASE).unwrap().config.ingest.keyframe_decoders, None);
    let off = parse(&format!("{BASE}\n[ingest]\nkeyframe_decoders = 0\n"))
        .unwrap()
        .config;
    assert_eq!(off.ingest.keyframe_decoders, Some(0));
    let errs = errors(&format!("{BASE}\n[ingest]\nkeyframe_decoders = 5000\n"));
    assert!(
        errs.iter()
            .any(|(line, path, _)| *line > 0 && path == "ingest.keyframe_decoders"),
        "{errs:?}"
    );
    let errs = errors(&format!("{BASE}\n[ingest]\nkeyframe_decoders = -1\n"));
    assert!(
        errs.iter()
            .any(|(_, path, _)| path == "ingest.keyframe_decoders"),
        "{errs:?}"
    );
}

#[test]
fn receive_coalescing_defaults_to_20ms_and_is_bounded() {
    let c = parse(BASE).unwrap().config;
    assert_eq!(
        c.ingest.receive_coalesce,
        std::time::Duration::from_millis(20)
    );
    let off = parse(&format!("{BASE}\n[ingest]\nreceive_coalesce = \"0s\"\n"))
        .unwrap()
        .config;
    assert!(off.ingest.receive_coalesce.is_zero());
    let errs = errors(&format!("{BASE}\n[ingest]\nreceive_coalesce = \"2s\"\n"));
    assert!(
        errs.iter().any(|(line, path, msg)| *line > 0
            && path == "ingest.receive_coalesce"
            && msg.contains("2s would hold")),
        "{errs:?}"
    );
}
