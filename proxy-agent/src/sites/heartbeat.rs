//! A remote node's greeting to every ingress node of its site, once a
//! second, through the tunnel: an inner packet to the ingress node's own
//! tunnel address, which its data plane hands up unchanged. Sent by this
//! node's kernel, it keeps the neighbour entry towards each ingress node
//! resolved, without which the data plane drops the shards' replies
//! (`drop_tunnel_no_neigh`).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use super::wire;

pub const INTERVAL: Duration = Duration::from_secs(1);

/// Greets `ingress_nodes` from `local:port` until the task is stopped.
pub async fn run(local: Ipv4Addr, port: u16, ingress_nodes: Vec<Ipv4Addr>, site: String) {
    let socket = match tokio::net::UdpSocket::bind(SocketAddrV4::new(local, port)).await {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "heartbeat: cannot bind {local}:{port} ({e}); the ingress nodes' neighbour entries are not kept \
                 resolved from here, and replies may be dropped until they are"
            );
            return;
        }
    };
    let payload = format!("samp-proxy heartbeat {site}");
    let me = SocketAddrV4::new(local, port);
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        for node in &ingress_nodes {
            let to = SocketAddrV4::new(*node, port);
            if let Err(e) = socket.send_to(&wire::inner_packet(me, to, payload.as_bytes()), to).await {
                log::debug!("heartbeat to {to}: {e}");
            }
        }
    }
}
