//! Memoized endpoint tiers for large services.
//!
//! Choosing an endpoint walks every endpoint of the service (health, address,
//! target port, locality rank). For a service with hundreds of endpoints that
//! walk is tens of microseconds, yet its result, the best-ranked tier with its
//! weights, only changes when the mesh state changes or the source workload
//! does. This cache keeps that tier per (service, port, mode, source locality)
//! until the next change to workloads or services, which clears it, so a
//! connection to a large service costs one lookup and a binary search.
//!
//! Small services skip the cache: walking a few endpoints is cheaper than the
//! lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::model::{NamespacedHostname, Str, Workload};
use crate::route::LbMode;

/// Services with at least this many endpoints use the cache.
pub const MIN_ENDPOINTS: usize = 8;

/// The best-ranked endpoints of a service for one source, with cumulative
/// capacities for the weighted pick.
#[derive(Debug)]
pub struct Tier {
    endpoints: Vec<(Arc<Workload>, u16)>,
    cumulative: Vec<u64>,
}

impl Tier {
    /// A tier from candidates in iteration order; `None` when their total
    /// capacity is zero (nothing to pick).
    pub fn new(endpoints: Vec<(Arc<Workload>, u16)>) -> Option<Tier> {
        let mut total = 0u64;
        let cumulative: Vec<u64> = endpoints
            .iter()
            .map(|(wl, _)| {
                total += u64::from(wl.capacity);
                total
            })
            .collect();
        (total > 0).then_some(Tier {
            endpoints,
            cumulative,
        })
    }

    /// Picks an endpoint with probability proportional to its capacity. Draws
    /// exactly one number, and picks the same endpoint for it as walking the
    /// candidates in order and subtracting capacities would.
    pub fn pick(&self, rng: &mut impl Rng) -> (Arc<Workload>, u16) {
        let total = *self.cumulative.last().expect("a tier is never empty");
        let draw = rng.random_range(0..total);
        // The first endpoint whose cumulative capacity exceeds the draw.
        let i = self.cumulative.partition_point(|&c| c <= draw);
        let (wl, port) = &self.endpoints[i];
        (wl.clone(), *port)
    }
}

/// What the tier depends on besides the state: the source's placement.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SourceKey {
    network: Str,
    region: Str,
    zone: Str,
    subzone: Str,
    node: Str,
    cluster: Str,
}

impl SourceKey {
    fn of(w: &Workload) -> SourceKey {
        SourceKey {
            network: w.network.clone(),
            region: w.locality.region.clone(),
            zone: w.locality.zone.clone(),
            subzone: w.locality.subzone.clone(),
            node: w.node.clone(),
            cluster: w.cluster_id.clone(),
        }
    }

    fn matches(&self, w: &Workload) -> bool {
        self.network == w.network
            && self.region == w.locality.region
            && self.zone == w.locality.zone
            && self.subzone == w.locality.subzone
            && self.node == w.node
            && self.cluster == w.cluster_id
    }
}

/// Which tier (see [`LbCache::get`]): the service, the service port and the mode.
type TierKey = (NamespacedHostname, u16, LbMode);

/// The cache. Cloning a state starts its copy with an empty cache.
#[derive(Debug, Default)]
pub struct LbCache {
    #[allow(clippy::type_complexity)]
    tiers: Mutex<HashMap<TierKey, (SourceKey, Arc<Tier>)>>,
}

impl Clone for LbCache {
    fn clone(&self) -> Self {
        LbCache::default()
    }
}

impl LbCache {
    /// Forgets every tier (the state changed). No locking: the caller holds
    /// the state mutably.
    pub fn clear(&mut self) {
        self.tiers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The cached tier for this service, port, mode and source, if any.
    pub fn get(&self, key: &TierKey, src: &Workload) -> Option<Arc<Tier>> {
        let tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        match tiers.get(key) {
            Some((source, tier)) if source.matches(src) => Some(tier.clone()),
            _ => None,
        }
    }

    /// Remembers a tier.
    pub fn put(&self, key: TierKey, src: &Workload, tier: Arc<Tier>) {
        let mut tiers = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        tiers.insert(key, (SourceKey::of(src), tier));
    }

    /// How many tiers are cached.
    pub fn len(&self) -> usize {
        self.tiers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no tier is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
