//! The human summary `sharpeyes check-config` prints for a valid file.

use std::collections::BTreeMap;
use std::fmt;

use crate::Config;
use crate::schema::{CameraKind, GridLevel, Sampling};

/// Cameras per grid and kind, models, hazards, sensors and endpoints, for people.
pub struct Summary<'a>(pub(crate) &'a Config);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let count = |l: GridLevel| c.grids.iter().filter(|g| g.level == Some(l)).count();
        let levels: Vec<String> = [
            GridLevel::County,
            GridLevel::Town,
            GridLevel::Village,
            GridLevel::Grid,
        ]
        .into_iter()
        .map(|l| format!("{} {}", count(l), l.as_str()))
        .collect();
        writeln!(f, "grids by level: {}", levels.join(", "))?;

        let kind_count = |k: CameraKind| c.cameras.iter().filter(|cam| cam.kind == k).count();
        writeln!(
            f,
            "cameras: {} ({} sharp-eyes, {} social-unit, {} disabled)",
            c.cameras.len(),
            kind_count(CameraKind::SharpEyes),
            kind_count(CameraKind::SocialUnit),
            c.cameras.iter().filter(|cam| !cam.enabled).count()
        )?;
        let mut per_grid: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for cam in &c.cameras {
            let e = per_grid.entry(cam.grid()).or_default();
            match cam.kind {
                CameraKind::SharpEyes => e.0 += 1,
                CameraKind::SocialUnit => e.1 += 1,
            }
        }
        for (grid, (se, su)) in &per_grid {
            let path: Vec<&str> = c.grid_path(grid).iter().map(|g| g.name.as_str()).collect();
            writeln!(
                f,
                "  {grid:<20} {se:>3} sharp-eyes {su:>3} social-unit  {}",
                path.join(" / ")
            )?;
        }

        writeln!(f, "models: {}", c.models.len())?;
        for m in &c.models {
            let classes = if m.classes.is_empty() {
                "from the model's metadata".to_owned()
            } else {
                m.classes.join(", ")
            };
            writeln!(
                f,
                "  {:<14} {} {}x{}, batch <= {}, {} thread(s), classes: {classes}  ({})",
                m.name,
                m.layout.as_str(),
                m.input_shape().0,
                m.input_shape().1,
                m.max_batch,
                m.threads,
                m.path.display()
            )?;
        }

        writeln!(f, "hazards: {}", c.hazards.len())?;
        for h in &c.hazards {
            let watched = c
                .cameras
                .iter()
                .filter(|cam| c.camera_hazards(cam).any(|x| x.name == h.name))
                .count();
            let mut rule = format!(
                "{} >= {:.2}, confirm {}/{}",
                h.classes.join("|"),
                h.min_confidence,
                h.confirm.k,
                h.confirm.n
            );
            if h.min_count > 1 {
                rule += &format!(", count >= {}", h.min_count);
            }
            if !h.min_dwell.is_zero() {
                rule += &format!(", dwell >= {}", humantime::format_duration(h.min_dwell));
            }
            if !h.zones.is_empty() {
                rule += &format!(", in {}", h.zones.join("|"));
            }
            writeln!(
                f,
                "  {:<14} {:<8} model {}: {rule}; cooldown {}; on {watched} camera(s)",
                h.name,
                h.severity.as_str(),
                h.model,
                humantime::format_duration(h.cooldown)
            )?;
        }

        let keyframes = c
            .cameras
            .iter()
            .filter(|cam| cam.sampling == Sampling::Keyframes)
            .count();
        writeln!(
            f,
            "sampling: {keyframes} camera(s) keyframes only, {} more often",
            c.cameras.len() - keyframes
        )?;
        writeln!(f, "sensors: {}", c.sensors.len())?;
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &c.sensors {
            *kinds.entry(s.kind.as_str()).or_default() += 1;
        }
        for (k, n) in kinds {
            writeln!(f, "  {k:<14} {n}")?;
        }
        match &c.mqtt {
            Some(m) => writeln!(f, "mqtt: {} (prefix {})", m.url, m.prefix)?,
            None => writeln!(f, "mqtt: embedded broker on loopback")?,
        }
        match &c.redis {
            Some(r) => writeln!(f, "state: redis {}", r.url)?,
            None => writeln!(
                f,
                "state: in memory, outbox spooled under {}",
                c.node.data_dir.display()
            )?,
        }
        if let Some(cluster) = c.cluster() {
            let capacity = match cluster.capacity {
                Some(n) => format!("{n}"),
                None => format!(
                    "{} ({} per core here)",
                    cluster.capacity(),
                    crate::CAMERAS_PER_CORE
                ),
            };
            writeln!(
                f,
                "cluster: node {}, lease {}, capacity {capacity}{}",
                c.node.id,
                humantime::format_duration(cluster.lease),
                cluster
                    .zone
                    .as_ref()
                    .map_or(String::new(), |z| format!(", zone {z}"))
            )?;
        }
        if let Some(g) = &c.gb28181 {
            let show = |id: &str| {
                crate::gbt28181::DeviceId::parse(id)
                    .map_or_else(|e| e.to_string(), |id| id.to_string())
            };
            writeln!(f, "gb28181: registers with {} as device", g.server)?;
            writeln!(f, "  platform {}", show(&g.server_id))?;
            writeln!(f, "  device   {}", show(&g.device_id))?;
        }
        write!(f, "http: {}", c.http.listen)
    }
}
