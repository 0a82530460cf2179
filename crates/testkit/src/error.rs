use std::path::PathBuf;

/// What went wrong while setting up or driving a fixture.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("binary {0:?} not found in PATH, /usr/sbin or /sbin")]
    MissingBinary(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what} did not become ready within {secs} s; log tail:\n{log_tail}")]
    Timeout {
        what: String,
        secs: u64,
        log_tail: String,
    },
    #[error("{what} exited during start-up ({status}); log tail:\n{log_tail}")]
    EarlyExit {
        what: String,
        status: String,
        log_tail: String,
    },
    #[error("schema {path}: {why}")]
    Schema { path: PathBuf, why: String },
    #[error("{0}")]
    Other(String),
}

impl TestkitError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            what: what.into(),
            source,
        }
    }
}
