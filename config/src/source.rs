//! The parsed document with spans: turns field paths into lines, and error spans into paths.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{FieldPath, Position, Problem, Segment, closest};

/// The TOML document, kept with its spans so that every problem can name its line.
pub(crate) struct Source<'i> {
    pub text: &'i str,
    pub root: Spanned<DeTable<'i>>,
}

impl<'i> Source<'i> {
    /// Parses the text; a syntax error comes back as one problem with its position.
    pub fn parse(text: &'i str) -> Result<Self, Problem> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Self { text, root }),
            Err(e) => {
                let mut p = Problem::error(FieldPath::root(), e.message().trim().to_owned())
                    .hint("this is a TOML syntax error: see https://toml.io for the format");
                p.position = e.span().map(|s| Position::of_offset(text, s.start));
                Err(p)
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Spanned<DeValue<'i>>> {
        self.root.get_ref().get(key)
    }

    /// Deserializes one value; an error comes back with the path and position of the field
    /// it is about, found from the error's span.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        value: &Spanned<DeValue<'i>>,
        path: &FieldPath,
    ) -> Result<T, Problem> {
        T::deserialize(ValueDeserializer::from(value.clone())).map_err(|e| {
            let span = e.span().unwrap_or_else(|| value.span());
            let mut full = path.clone();
            descend_to_offset(value, span.start, &mut full);
            let message = e.message().trim().to_owned();
            let mut p = Problem::error(full, message.clone());
            p.hint = unknown_name_hint(&message);
            p.position = Some(Position::of_offset(self.text, span.start));
            p
        })
    }

    /// Fills in the position of a problem from its path: the field itself if the file
    /// has it, otherwise the nearest enclosing table (a missing field points at its table).
    pub fn locate(&self, problem: &mut Problem) {
        if problem.position.is_none() {
            problem.position = self
                .span_of(&problem.path)
                .map(|s| Position::of_offset(self.text, s.start));
        }
    }

    fn span_of(&self, path: &FieldPath) -> Option<Range<usize>> {
        let mut segments = path.0.iter();
        let Some(Segment::Key(first)) = segments.next() else {
            return None;
        };
        let mut node = self.get(first)?;
        let mut span = key_span(self.root.get_ref(), first).unwrap_or_else(|| node.span());
        for seg in segments {
            let next = match (seg, node.get_ref()) {
                (Segment::Key(k), DeValue::Table(t)) => t
                    .get(k.as_str())
                    .map(|v| (v, key_span(t, k).unwrap_or_else(|| v.span()))),
                (Segment::Index(i), DeValue::Array(a)) => a.get(*i).map(|v| (v, v.span())),
                _ => None,
            };
            match next {
                Some((n, s)) => (node, span) = (n, s),
                None => break,
            }
        }
        Some(span)
    }
}

/// The span of `key` itself in a table: for `url = "..."` that is the line the user wrote.
fn key_span(table: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(k, _)| k.span())
}

/// Extends `path` down to the deepest key or element of `value` whose span holds `offset`.
fn descend_to_offset(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut FieldPath) {
    let contains = |r: Range<usize>| r.start <= offset && offset < r.end.max(r.start + 1);
    match value.get_ref() {
        DeValue::Table(t) => {
            for (k, v) in t.iter() {
                if contains(k.span()) || contains(v.span()) {
                    path.0.push(Segment::Key(k.get_ref().to_string()));
                    descend_to_offset(v, offset, path);
                    return;
                }
            }
        }
        DeValue::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                if contains(v.span()) {
                    path.0.push(Segment::Index(i));
                    descend_to_offset(v, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// The string value of `key` in a table value, if it has one: used to learn the id of an
/// entry that failed to deserialize, so references to it are not reported as unknown.
pub(crate) fn string_field<'a>(value: &'a Spanned<DeValue<'_>>, key: &str) -> Option<&'a str> {
    match value.get_ref() {
        DeValue::Table(t) => t.get(key).and_then(|v| v.get_ref().as_str()),
        _ => None,
    }
}

/// For serde's "unknown field `grdi`, expected one of `id`, `grid`..." (and the same for
/// variants), the closest expected name.
fn unknown_name_hint(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (word, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    closest(word, &candidates).map(|c| format!("did you mean `{c}`?"))
}
