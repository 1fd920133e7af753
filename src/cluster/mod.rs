//! The cluster's administration, apart from the runs themselves (`backend::k8s`): what a
//! namespace must grant, whether a run can succeed there, the clean-up of what crashed clients
//! left behind, and the controller that keeps the warm pools filled.
//!
//! - [`access`]: the permissions buildr uses, and a refusal put into words that name one
//! - [`check`]: `buildr k8s check`, whether a run can succeed in a namespace
//! - [`gc`]: `buildr k8s gc`, which removes what crashed clients left behind
//! - [`controller`]: `buildr k8s pool-controller`, which keeps every `BuildrPool` filled

pub mod access;
pub mod check;
pub mod controller;
pub mod gc;
