//! chord-llm: a GGUF inference engine for Node.js.
//!
//! Everything but `binding` is plain Rust that `cargo test` reaches without Node.

pub mod error;
pub mod gguf;
pub mod mapping;
pub mod tensor;
