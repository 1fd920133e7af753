//! The task's sandbox, applied by the executor between fork and exec on the local and ssh
//! backends (see README, Security):
//!
//! - [`policy`]: what the task may touch (`sandbox`, `writable`, `readable`, the egress), and
//!   its form on the executor's command line
//! - [`probe`]: what this machine allows, by a real trial of each mechanism in a child
//! - [`confine`]: the policy and the machine turned into layers, or a one-line refusal
//! - [`namespaces`], [`landlock`], [`seccomp`]: one mechanism each

pub mod confine;
pub mod landlock;
pub mod namespaces;
pub mod policy;
pub mod probe;
pub mod seccomp;

pub use confine::{Confinement, Places, Refused};
pub use policy::{Mode, Net, Policy, TaskSandbox};
pub use probe::Support;
