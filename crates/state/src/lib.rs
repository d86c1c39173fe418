//! The mesh state of a ztunnel-compatible proxy, as pure data and logic.
//!
//! This crate knows what istiod (or a local YAML file) has said about the mesh:
//! workloads, services, and L4 authorization policies, with the indexes the
//! data path needs. On top of that it makes the decisions ztunnel makes, with
//! the same rules: which service or workload an address or hostname names,
//! which endpoint a connection goes to (health, locality, capacity), whether
//! it goes through a waypoint or an east-west gateway, which local port an
//! inbound HBONE request reaches, and (through `zs-authz`) whether it is
//! allowed.
//!
//! It does no I/O: no sockets, no clocks, no environment. Randomness is passed
//! in. That makes every decision unit-testable and benchmarkable. The crates
//! that do I/O (`zs-xds`, `zs-proxy`) depend on this one; it depends on none of
//! them.
//!
//! Module map: [`model`] (types, with ztunnel's serde shape), [`convert`]
//! (xDS protobuf ↔ model), [`store`] (`MeshState` and its indexes), [`xds`]
//! (applying a delta response), [`local`] (the `LOCAL_XDS_PATH` file),
//! [`names`] (hostname → service), [`route`] (outbound routes, load
//! balancing, inbound targets).

pub mod convert;
pub mod lb_cache;
pub mod local;
pub mod model;
pub mod names;
pub mod route;
pub mod store;
pub mod xds;

use std::sync::Arc;

pub use model::*;
pub use names::NameConfig;
pub use route::{
    Authority, Destination, HBONE_PORT, HboneHop, InboundError, InboundTarget, Route, RouteError,
    RouteKind, RouteRequest, UpstreamAddr,
};
pub use store::MeshState;
pub use zs_authz;

/// The mesh state shared between the control plane (writer) and the data path
/// (readers). Writers apply a whole xDS response under one write lock, so a
/// reader never sees half of a push. Readers hold the lock only for a lookup.
#[derive(Clone, Default, Debug)]
pub struct SharedMesh(Arc<parking_lot::RwLock<MeshState>>);

impl SharedMesh {
    pub fn new(state: MeshState) -> Self {
        SharedMesh(Arc::new(parking_lot::RwLock::new(state)))
    }

    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, MeshState> {
        self.0.read()
    }

    pub fn write(&self) -> parking_lot::RwLockWriteGuard<'_, MeshState> {
        self.0.write()
    }
}
