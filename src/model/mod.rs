//! Model architectures: hyperparameters, weight access, per-sequence state and the forward pass.

pub mod config;
pub mod forward;
pub mod prefill;
pub mod state;
pub mod weights;
