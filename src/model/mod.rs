//! Model architectures: hyperparameters, weight access, per-sequence state and the forward pass.

pub mod compute;
pub mod config;
pub mod forward;
pub mod kv_cache;
pub mod ops;
pub mod state;
pub mod weights;
