//! Hostile input for the parsers that face the network: arbitrary bytes, valid samples
//! mangled the ways attackers and broken peers mangle them, and JSON of any shape with the
//! numbers that break code (year 10000, 2^64, NaN as text).
//!
//! [`check`] runs a parser over a bounded number of cases, each under `catch_unwind`, and
//! fails naming the case, its seed and the input when one panics. Cases are reproducible: the
//! seed is fixed per property, or taken from `SHARPEYES_SEED` to explore further.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Fragments that break parsers: quoting, nesting, secret references, huge and negative
/// numbers, odd Unicode, URL and time syntax.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    "\n",
    "\r\n",
    ",",
    ":",
    "\\",
    "\0",
    "#",
    "${",
    "${file:/etc/passwd}",
    "${HOME}",
    "}",
    "253402300800000",
    "18446744073709551616",
    "-9223372036854775809",
    "-1",
    "0",
    "1e309",
    "-0.0",
    "NaN",
    "Infinity",
    "null",
    "true",
    "é",
    "\u{202e}",
    "\u{fffd}",
    "💥",
    "%",
    "%00",
    "@",
    "//",
    "rtsp://",
    "rtsp://u:p@",
    "[::1]",
    ":65536",
    ":-1",
    "?user=a&password=b",
    "0x",
    "1d",
    "100000000000h",
    "-5s",
    "2026-13-40T25:61:61Z",
    "9999-12-31T23:59:59Z",
    "+10000-01-01T00:00:00Z",
];

/// A seeded source of hostile input.
pub struct Hostile {
    rng: fastrand::Rng,
}

impl Hostile {
    fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// 0 to `max` arbitrary bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.usize(0..=max);
        (0..n).map(|_| self.rng.u8(..)).collect()
    }

    /// A hostile fragment, or a few arbitrary bytes.
    pub fn token(&mut self) -> Vec<u8> {
        if self.rng.u8(..4) == 0 {
            self.bytes(8)
        } else {
            TOKENS[self.rng.usize(..TOKENS.len())].as_bytes().to_vec()
        }
    }

    /// `sample` with 1 to 8 edits: fragments inserted, bytes flipped, spans deleted,
    /// duplicated or cut off.
    pub fn mangle(&mut self, sample: &[u8]) -> Vec<u8> {
        let mut out = sample.to_vec();
        for _ in 0..self.rng.usize(1..=8) {
            let at = self.rng.usize(0..=out.len());
            match self.rng.u8(..6) {
                0 | 1 => {
                    let t = self.token();
                    out.splice(at..at, t);
                }
                2 if at < out.len() => out[at] ^= 1 << self.rng.u8(..8),
                3 => {
                    let end = (at + self.rng.usize(0..32)).min(out.len());
                    out.drain(at..end);
                }
                4 => {
                    let end = (at + self.rng.usize(0..64)).min(out.len());
                    let span = out[at..end].to_vec();
                    out.splice(at..at, span);
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    /// A JSON value of any shape, up to `depth` levels, with numbers and strings from
    /// [`TOKENS`] and the keys of `keys` among the object keys.
    pub fn json(&mut self, depth: u32, keys: &[&str]) -> serde_json::Value {
        use serde_json::Value;
        let pick = self.rng.u8(..if depth == 0 { 5 } else { 7 });
        match pick {
            0 => Value::Null,
            1 => Value::Bool(self.rng.bool()),
            2 => match self.rng.u8(..5) {
                0 => Value::from(self.rng.i64(..)),
                1 => Value::from(self.rng.u64(..)),
                2 => Value::from(253_402_300_800_000_u64),
                3 => serde_json::Number::from_f64(self.rng.f64() * 1e300)
                    .map_or(Value::Null, Value::Number),
                _ => Value::from(self.rng.i64(-5..5)),
            },
            3 => Value::String(String::from_utf8_lossy(&self.token()).into_owned()),
            4 => Value::String(String::from_utf8_lossy(&self.bytes(40)).into_owned()),
            5 => Value::Array(
                (0..self.rng.usize(0..6))
                    .map(|_| self.json(depth - 1, keys))
                    .collect(),
            ),
            _ => {
                let mut map = serde_json::Map::new();
                for _ in 0..self.rng.usize(0..8) {
                    let key = if !keys.is_empty() && self.rng.bool() {
                        keys[self.rng.usize(..keys.len())].to_owned()
                    } else {
                        String::from_utf8_lossy(&self.token()).into_owned()
                    };
                    map.insert(key, self.json(depth - 1, keys));
                }
                Value::Object(map)
            }
        }
    }

    /// One of `choices`.
    pub fn pick<'a, T>(&mut self, choices: &'a [T]) -> &'a T {
        &choices[self.rng.usize(..choices.len())]
    }
}

/// Runs `parse` on `cases` inputs from `generate`; panics naming the first input on which
/// `parse` panicked. `parse` should itself assert what must hold of its answer (an error
/// that says something, an accepted value within bounds).
pub fn check(
    property: &str,
    cases: usize,
    mut generate: impl FnMut(&mut Hostile) -> Vec<u8>,
    mut parse: impl FnMut(&[u8]),
) {
    let seed = std::env::var("SHARPEYES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            // Fixed per property: a failure reproduces on every run.
            property.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        });
    let mut hostile = Hostile::new(seed);
    for case in 0..cases {
        let input = generate(&mut hostile);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| parse(&input))) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(not a string)");
            let shown: String = String::from_utf8_lossy(&input).chars().take(2000).collect();
            panic!(
                "{property}: case {case} of seed {seed} (rerun with SHARPEYES_SEED={seed}) panicked: {why}\ninput ({} bytes): {shown:?}",
                input.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_parser_is_caught_and_its_input_named() {
        let caught = catch_unwind(|| {
            check(
                "finds the bomb",
                500,
                |h| h.mangle(b"harmless text with a fuse"),
                |input| assert!(!input.contains(&b'\0'), "a NUL"),
            )
        });
        let message = caught.expect_err("a NUL is among the fragments");
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(
            message.contains("SHARPEYES_SEED=") && message.contains("a NUL"),
            "{message}"
        );
    }

    #[test]
    fn the_same_property_sees_the_same_inputs() {
        let run = || {
            let mut seen = Vec::new();
            check("same", 20, |h| h.bytes(16), |i| seen.push(i.to_vec()));
            seen
        };
        assert_eq!(run(), run());
    }
}
