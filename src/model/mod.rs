//! Model architectures: hyperparameters, weight access, per-sequence state and the forward pass.

pub mod config;
pub mod forward;
pub mod ops;
pub mod state;
pub mod weights;
