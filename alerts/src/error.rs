//! The one error of this crate, with a kind a caller can act on and a message that names
//! the store, field or alert (never a credential).

use std::fmt;

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The state store (Redis, or memory with its disk spool) failed an operation.
    Store,
    /// An event names something the configuration lacks (a camera, a grid).
    Config,
    /// The snapshot could not be made.
    Snapshot,
    /// `[mqtt]` cannot be used as given (a field, and why).
    Settings,
    /// The embedded broker does not start.
    Broker,
    /// An alert cannot be encoded.
    Encode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A store operation that failed, e.g. `redis 127.0.0.1:6379: XADD: connection refused`.
    pub fn store(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Store, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
