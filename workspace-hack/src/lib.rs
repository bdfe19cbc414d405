//! No code. Depending on this crate makes a build of one workspace package turn on the same
//! dependency features as the build of the whole workspace, so that both reuse one compiled
//! dependency tree; see this crate's `Cargo.toml`.
