//! The one error type at the library boundary. Every variant's message names the problem and,
//! where there is one, the fix: these messages are what a user of the CLI reads.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch inside a model, backend error).
    #[error("tensor error: {0}")]
    Tensor(candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A user-supplied value is out of range or inconsistent (size, steps, sampler name...).
    #[error("{0}")]
    InvalidArgument(String),

    /// A checkpoint could not be read or understood.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    /// A model config is missing a field or holds a value Pigment does not support.
    #[error("model config: {0}")]
    Config(String),

    /// Tokenizer files could not be read or parsed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// An image could not be read, written or converted.
    #[error("image: {0}")]
    Image(String),
}

impl From<candle_core::Error> for Error {
    /// candle attaches a backtrace when RUST_BACKTRACE is set, and its message then prints the
    /// whole trace: a user reads the cause, not the trace.
    fn from(err: candle_core::Error) -> Self {
        fn strip(err: candle_core::Error) -> candle_core::Error {
            match err {
                candle_core::Error::WithBacktrace { inner, .. } => strip(*inner),
                other => other,
            }
        }
        Error::Tensor(strip(err))
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
