//! Input snapshots by content: the input tree split into content-addressed packs, with an
//! index of which file is where, stored in an OCI registry so that a run sends only what the
//! registry does not already hold (issue: "only what changed travels").
//!
//! - [`index`]: what a snapshot holds: every entry (path, kind, mode, content digest or link
//!   target) and the packs, in a canonical binary form whose digest names the snapshot.
//! - [`pack`]: the packs: a pack in the registry is never rewritten; new contents go into new
//!   packs (so one changed file is one small pack), each a `.tar.s2` of blobs named by digest.
//! - [`apply`]: a workspace built from an index and its packs, everything checked first.
//! - [`onto`]: a workspace holding a seed snapshot brought to another by the difference.
//! - [`delta`]: the same difference sent in the run's own stream, with its contents, to a pod
//!   that holds the seed: no index travels whole, and the registry is not asked.
//! - [`host`]: a host's side of inputs sent by content: cached packs, the apply.
//! - [`pull`]: a pod's side: the snapshot pulled from the registry, checked, applied.
//! - [`known`]: the packs this machine knows to be in a repository.
//! - [`registry`]: the repository: blobs sent unless present, indexes and blobs read back
//!   checked.
//! - [`push`]: the upload: new packs only, then the index and one manifest that references
//!   every pack (registry garbage collection keeps what a tagged snapshot names).

pub mod apply;
pub mod delta;
pub mod host;
pub mod index;
pub mod known;
pub mod onto;
pub mod pack;
pub mod pull;
pub mod push;
pub mod registry;

pub use apply::{Applied, ApplyError, apply};
pub use index::{Entry, Index, Kind, PackRef};
pub use known::KnownPacks;
pub use pull::{PullError, pull};
pub use push::{PushError, Pushed, push};
pub use registry::{Credentials, Repository};
