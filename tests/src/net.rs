//! Loopback address blocks, so parallel tests never share a listener address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// A private `127.A.B.0/24` block for one test.
#[derive(Clone, Copy, Debug)]
pub struct AddrBlock {
    a: u8,
    b: u8,
}

impl AddrBlock {
    /// A random block (collisions between concurrently running tests are
    /// astronomically unlikely: 60,000 blocks).
    pub fn new() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        AddrBlock {
            a: rng.random_range(20..=250),
            b: rng.random_range(1..=250),
        }
    }

    /// The n-th address of the block (n in 1..=254).
    pub fn ip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.a, self.b, n))
    }

    pub fn addr(&self, n: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(n), port)
    }
}

impl Default for AddrBlock {
    fn default() -> Self {
        Self::new()
    }
}
