//! Two networks joined only through an east-west gateway, built from network
//! namespaces.
//!
//! Each network is a bridge in a namespace of its own (the "switch"); a host
//! is a namespace with one veth leg on a switch and one address in that
//! network's `/24`: `10.1.0.<n>` on [`Net::One`], `10.2.0.<n>` on [`Net::Two`].
//! Hosts have only their on-link route, so a host of one network cannot reach
//! the other. The gateway host has a leg in each network (`10.1.0.254` and
//! `10.2.0.254`) and IP forwarding off: the only way across is a process on it
//! that relays connections, as an east-west gateway does.

use std::net::{IpAddr, Ipv4Addr};

use crate::netns::{Netns, unique_tag};

/// One of the two networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    One,
    Two,
}

impl Net {
    /// The mesh network name (`Workload.network`).
    pub fn name(self) -> &'static str {
        match self {
            Net::One => "net1",
            Net::Two => "net2",
        }
    }

    /// Host `n`'s address on this network.
    pub fn ip(self, n: u8) -> IpAddr {
        let third = match self {
            Net::One => 1,
            Net::Two => 2,
        };
        IpAddr::V4(Ipv4Addr::new(10, third, 0, n))
    }
}

/// The last octet of the gateway host's address on both networks.
pub const GATEWAY_OCTET: u8 = 254;

/// A task's (or the gateway's) namespace and its address.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    /// The host's network (one, for the gateway).
    pub net: Net,
    /// The host's address on it.
    pub ip: IpAddr,
}

/// The two switches. Hosts are owned by the test, so it decides their lifetime.
#[derive(Debug)]
pub struct Networks {
    tag: String,
    one: Netns,
    two: Netns,
}

impl Networks {
    pub fn new() -> Networks {
        let tag = unique_tag();
        let switch = |n: u8| {
            let ns = Netns::new(&format!("zs-{tag}-sw{n}"));
            ns.ip(&["link", "add", "br0", "type", "bridge"]);
            ns.ip(&["link", "set", "br0", "up"]);
            ns
        };
        Networks {
            one: switch(1),
            two: switch(2),
            tag,
        }
    }

    fn switch(&self, net: Net) -> &Netns {
        match net {
            Net::One => &self.one,
            Net::Two => &self.two,
        }
    }

    /// Plugs `ns` into `net` as interface `dev` with address `<net>.<octet>/24`.
    fn plug(&self, ns: &Netns, net: Net, octet: u8, dev: &str) {
        let port = format!("p{octet}");
        self.switch(net).ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            dev,
            "netns",
            ns.name(),
        ]);
        self.switch(net)
            .ip(&["link", "set", &port, "master", "br0"]);
        self.switch(net).ip(&["link", "set", &port, "up"]);
        ns.ip(&["addr", "add", &format!("{}/24", net.ip(octet)), "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }

    /// A new host on `net` at `<net>.<octet>`, named after its `role`.
    pub fn host(&self, role: &str, net: Net, octet: u8) -> Host {
        assert_ne!(octet, GATEWAY_OCTET, "reserved for the gateway");
        let ns = Netns::new(&format!("zs-{}-{role}", self.tag));
        self.plug(&ns, net, octet, "eth0");
        Host {
            ip: net.ip(octet),
            net,
            ns,
        }
    }

    /// The gateway host: `10.1.0.254` on network one, `10.2.0.254` on network
    /// two, not routing between them.
    pub fn gateway_host(&self) -> Host {
        let ns = Netns::new(&format!("zs-{}-gw", self.tag));
        self.plug(&ns, Net::One, GATEWAY_OCTET, "eth1");
        self.plug(&ns, Net::Two, GATEWAY_OCTET, "eth2");
        // /proc/sys/net belongs to the network namespace of the thread that opens it.
        ns.enter(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "0"))
            .expect("turn IP forwarding off on the gateway host");
        Host {
            ip: Net::One.ip(GATEWAY_OCTET),
            net: Net::One,
            ns,
        }
    }
}

impl Default for Networks {
    fn default() -> Self {
        Self::new()
    }
}
