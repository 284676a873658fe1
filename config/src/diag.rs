//! Problems found in a configuration file, each with the file, line, field path and a hint.

use std::fmt;
use std::path::PathBuf;

/// Whether a problem stops the configuration from being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The configuration cannot be used until this is fixed.
    Error,
    /// Usable, but probably not what was meant (or not safe).
    Warning,
}

/// One step of a field path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value lives in the document, e.g. `cameras[2].zones[0].polygon`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    /// `section[index]`, the start of most paths.
    pub fn item(section: &str, index: usize) -> Self {
        Self(vec![
            Segment::Key(section.to_owned()),
            Segment::Index(index),
        ])
    }

    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_owned()));
        p
    }

    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A line and column in the source file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `src`, columns counted in characters.
    pub fn of_offset(src: &str, offset: usize) -> Self {
        let offset = offset.min(src.len());
        let before = &src[..floor_char_boundary(src, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { line, column }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One problem: what is wrong, where, and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub level: Level,
    pub path: FieldPath,
    /// Filled in from the document once the problem is reported; `None` for values the
    /// file does not contain (a default that turned out wrong, say).
    pub position: Option<Position>,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn error(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            level: Level::Error,
            path,
            position: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(path: FieldPath, message: impl Into<String>) -> Self {
        Self {
            level: Level::Warning,
            ..Self::error(path, message)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Every problem found in one file, in document order. Its `Display` is what
/// `sharpeyes check-config` prints: one `file:line:column: level: path: message` per problem.
#[derive(Debug, Clone)]
pub struct Problems {
    pub file: PathBuf,
    pub items: Vec<Problem>,
}

impl Problems {
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter().filter(|p| p.level == Level::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.items.iter().filter(|p| p.level == Level::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.items {
            write!(f, "{}", self.file.display())?;
            if let Some(pos) = p.position {
                write!(f, ":{}:{}", pos.line, pos.column)?;
            }
            let level = match p.level {
                Level::Error => "error",
                Level::Warning => "warning",
            };
            write!(f, ": {level}: {}: {}", p.path, p.message)?;
            if let Some(h) = &p.hint {
                write!(f, "\n    hint: {h}")?;
            }
            writeln!(f)?;
        }
        let errors = self.errors().count();
        let warnings = self.warnings().count();
        write!(f, "{errors} error(s), {warnings} warning(s)")
    }
}

impl std::error::Error for Problems {}

/// The candidate a misspelt `word` most likely meant: within an edit distance of 2, or a
/// third of the candidate's length for longer names.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let src = "a = 1\n名字 = \"x\"\n";
        assert_eq!(Position::of_offset(src, 0), Position { line: 1, column: 1 });
        let off = src.find('=').unwrap();
        assert_eq!(
            Position::of_offset(src, off),
            Position { line: 1, column: 3 }
        );
        let off = src.rfind('=').unwrap();
        assert_eq!(
            Position::of_offset(src, off),
            Position { line: 2, column: 4 }
        );
    }

    #[test]
    fn paths_print_like_toml_accessors() {
        let p = FieldPath::item("cameras", 2)
            .key("zones")
            .index(0)
            .key("polygon");
        assert_eq!(p.to_string(), "cameras[2].zones[0].polygon");
    }
}
