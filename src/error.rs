//! The one error type of the engine. Every failure that can reach JavaScript is a variant here,
//! and every variant has a stable `code` (`ERR_*`) that callers can match on; messages name the
//! problem (file, key, tensor, value) for people.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open model file {path}: {source}")]
    FileNotFound { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a GGUF file: {0}")]
    NotGguf(String),
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedGgufVersion(u32),
    #[error("GGUF file is truncated: {0}")]
    Truncated(String),
    #[error("malformed GGUF: {0}")]
    Malformed(String),
    #[error("missing GGUF metadata key '{0}'")]
    MissingKey(String),
    #[error("GGUF metadata key '{key}' has type {found}, expected {expected}")]
    WrongKeyType { key: String, expected: &'static str, found: &'static str },
    #[error("unsupported tensor type {type_name} for tensor '{tensor}'")]
    UnsupportedTensorType { tensor: String, type_name: String },
    #[error("unsupported model architecture '{0}'")]
    UnsupportedArchitecture(String),
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    TensorShape { name: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("unsupported tokenizer: {0}")]
    UnsupportedTokenizer(String),
    #[error("invalid tokenizer data: {0}")]
    InvalidTokenizer(String),
    #[error("invalid option {option}: {message}")]
    InvalidOption { option: &'static str, message: String },
    #[error("token id {0} is out of range for this vocabulary")]
    InvalidToken(i64),
    #[error("context is full: {needed} positions needed, context size is {context_size}")]
    ContextFull { needed: usize, context_size: usize },
    #[error("the operation was aborted")]
    Aborted,
    #[error("the model has been disposed")]
    Disposed,
    #[error("the session is busy: a generation is running on it (finish, break or abort it first)")]
    SessionBusy,
    #[error("the model file {0} was truncated or changed while loaded; load it again")]
    ModelFileChanged(PathBuf),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("this model has no chat template (tokenizer.chat_template); pass one as the `template` option")]
    NoChatTemplate,
}

impl Error {
    /// The stable code that JavaScript sees as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::FileNotFound { .. } => "ERR_FILE_NOT_FOUND",
            Error::Io { .. } => "ERR_IO",
            Error::NotGguf(_) => "ERR_NOT_GGUF",
            Error::UnsupportedGgufVersion(_) => "ERR_UNSUPPORTED_GGUF_VERSION",
            Error::Truncated(_) => "ERR_GGUF_TRUNCATED",
            Error::Malformed(_) => "ERR_GGUF_MALFORMED",
            Error::MissingKey(_) => "ERR_GGUF_MISSING_KEY",
            Error::WrongKeyType { .. } => "ERR_GGUF_WRONG_KEY_TYPE",
            Error::UnsupportedTensorType { .. } => "ERR_UNSUPPORTED_TENSOR_TYPE",
            Error::UnsupportedArchitecture(_) => "ERR_UNSUPPORTED_ARCHITECTURE",
            Error::MissingTensor(_) => "ERR_MISSING_TENSOR",
            Error::TensorShape { .. } => "ERR_TENSOR_SHAPE",
            Error::UnsupportedTokenizer(_) => "ERR_UNSUPPORTED_TOKENIZER",
            Error::InvalidTokenizer(_) => "ERR_INVALID_TOKENIZER",
            Error::InvalidOption { .. } => "ERR_INVALID_OPTION",
            Error::InvalidToken(_) => "ERR_INVALID_TOKEN",
            Error::ContextFull { .. } => "ERR_CONTEXT_FULL",
            Error::Aborted => "ABORT_ERR",
            Error::Disposed => "ERR_DISPOSED",
            Error::SessionBusy => "ERR_SESSION_BUSY",
            Error::ModelFileChanged(_) => "ERR_MODEL_FILE_CHANGED",
            Error::ChatTemplate(_) => "ERR_CHAT_TEMPLATE",
            Error::NoChatTemplate => "ERR_NO_CHAT_TEMPLATE",
        }
    }

    /// The same error again, for reporting one failure of a batch to each of its sequences
    /// (an I/O error keeps its kind and message).
    pub fn duplicate(&self) -> Self {
        use Error::*;
        match self {
            FileNotFound { path, source } => FileNotFound { path: path.clone(), source: copy_io(source) },
            Io { path, source } => Io { path: path.clone(), source: copy_io(source) },
            NotGguf(s) => NotGguf(s.clone()),
            UnsupportedGgufVersion(v) => UnsupportedGgufVersion(*v),
            Truncated(s) => Truncated(s.clone()),
            Malformed(s) => Malformed(s.clone()),
            MissingKey(s) => MissingKey(s.clone()),
            WrongKeyType { key, expected, found } => WrongKeyType { key: key.clone(), expected, found },
            UnsupportedTensorType { tensor, type_name } => {
                UnsupportedTensorType { tensor: tensor.clone(), type_name: type_name.clone() }
            }
            UnsupportedArchitecture(s) => UnsupportedArchitecture(s.clone()),
            MissingTensor(s) => MissingTensor(s.clone()),
            TensorShape { name, expected, found } => {
                TensorShape { name: name.clone(), expected: expected.clone(), found: found.clone() }
            }
            UnsupportedTokenizer(s) => UnsupportedTokenizer(s.clone()),
            InvalidTokenizer(s) => InvalidTokenizer(s.clone()),
            InvalidOption { option, message } => InvalidOption { option, message: message.clone() },
            InvalidToken(t) => InvalidToken(*t),
            ContextFull { needed, context_size } => ContextFull { needed: *needed, context_size: *context_size },
            Aborted => Aborted,
            Disposed => Disposed,
            SessionBusy => SessionBusy,
            ModelFileChanged(p) => ModelFileChanged(p.clone()),
            ChatTemplate(s) => ChatTemplate(s.clone()),
            NoChatTemplate => NoChatTemplate,
        }
    }

    pub fn invalid_option(option: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidOption { option, message: message.into() }
    }
}

fn copy_io(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}
