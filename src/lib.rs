//! chord-llm: a GGUF inference engine for Node.js.
//!
//! Everything but `binding` is plain Rust that `cargo test` reaches without Node.

// Every unsafe block says why it is sound (a `// SAFETY:` comment), checked by clippy.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bandwidth;
pub mod chat;
pub mod engine;
pub mod error;
pub mod fuzzing;
pub mod gguf;
pub mod mapping;
pub mod model;
pub mod pager;
pub mod pool;
pub mod quant;
pub mod sampler;
pub mod tensor;
pub mod text_stream;
pub mod tokenizer;

#[cfg(test)]
mod testutil;

#[cfg(feature = "node")]
mod binding;
