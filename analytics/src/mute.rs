//! Regions operators muted after false alarms, by camera and hazard: handed to every
//! running camera's rules as they change ([`Mutes`]), without restarting the camera.

use std::collections::HashMap;

/// A region in normalised frame coordinates (x right and y down, in 0..=1), corner by corner.
pub type Polygon = Vec<[f64; 2]>;

/// Every camera's muted regions: camera id -> (hazard, region).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MutedRegions(HashMap<String, Vec<(String, Polygon)>>);

impl MutedRegions {
    pub fn add(&mut self, camera: &str, hazard: &str, polygon: Polygon) {
        self.0
            .entry(camera.to_owned())
            .or_default()
            .push((hazard.to_owned(), polygon));
    }

    /// `camera`'s regions muted for `hazard`.
    pub fn of(&self, camera: &str, hazard: &str) -> Vec<Polygon> {
        self.0.get(camera).map_or_else(Vec::new, |regions| {
            (regions.iter())
                .filter(|(h, _)| h == hazard)
                .map(|(_, p)| p.clone())
                .collect()
        })
    }
}

/// Where the service sets the muted regions; every camera's analysis follows them from its
/// next analysed frame.
pub type Mutes = crate::watched::Watched<MutedRegions>;
