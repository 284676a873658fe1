//! The figures the harness reads from the service's `/metrics` (Prometheus text format).

use std::collections::BTreeSet;

/// One scrape of `/metrics`: every sample with its labels.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Scrape {
    /// Reads the text exposition; lines it does not understand are skipped.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Scrape { samples }
    }

    /// The sum of every sample of `name` that has all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every value `label` takes among the samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == label))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (head, value) = line.trim().rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y \"quoted\""` into pairs.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let s = Scrape::parse(
            "# HELP sharpeyes_frames_total Frames.\n\
             # TYPE sharpeyes_frames_total counter\n\
             sharpeyes_frames_total{camera=\"c1\",outcome=\"received\"} 250\n\
             sharpeyes_frames_total{camera=\"c2\",outcome=\"received\"} 240\n\
             sharpeyes_frames_total{camera=\"c1\",outcome=\"decoded\"} 10\n\
             sharpeyes_outbox_depth 3\n\
             weird{note=\"a \\\"quoted\\\", comma\"} 1.5e0\n\
             not a sample\n",
        );
        assert_eq!(
            s.sum("sharpeyes_frames_total", &[("outcome", "received")]),
            490.0
        );
        assert_eq!(
            s.sum(
                "sharpeyes_frames_total",
                &[("camera", "c1"), ("outcome", "decoded")]
            ),
            10.0
        );
        assert_eq!(s.sum("sharpeyes_outbox_depth", &[]), 3.0);
        assert_eq!(s.sum("weird", &[("note", "a \"quoted\", comma")]), 1.5);
        assert_eq!(s.sum("missing", &[]), 0.0);
        assert_eq!(
            s.label_values("sharpeyes_frames_total", "camera"),
            BTreeSet::from(["c1".to_owned(), "c2".to_owned()])
        );
    }
}
