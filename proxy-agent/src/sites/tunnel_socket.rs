//! An ingress agent's end of its tunnels, for its own traffic: one UDP
//! socket per (tunnel address, port), shared by every probe. Each probe
//! gets a channel with an inner port of its own; what comes back is handed
//! to the channel its inner destination port names.

use std::{
    collections::HashMap,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex, Weak},
};

use tokio::{net::UdpSocket, sync::mpsc};

use super::wire;

type Channels = Mutex<HashMap<u16, mpsc::UnboundedSender<(SocketAddrV4, Vec<u8>)>>>;

pub struct TunnelSocket {
    socket: UdpSocket,
    source: Ipv4Addr,
    channels: Channels,
    next_port: Mutex<u16>,
}

/// The open sockets, by address: probes of every site share them.
static OPEN: Mutex<Vec<(SocketAddrV4, Weak<TunnelSocket>)>> = Mutex::new(Vec::new());

/// Inner source ports of probes: above the usual ephemeral range's start,
/// so a shard's answers look like answers to any client.
const FIRST_PORT: u16 = 20_000;

impl TunnelSocket {
    /// The socket on `source:port`, opened (and its receiver started) on
    /// first use.
    pub async fn shared(source: Ipv4Addr, port: u16) -> io::Result<Arc<TunnelSocket>> {
        let at = SocketAddrV4::new(source, port);
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(s) = open.iter().find(|(a, _)| *a == at).and_then(|(_, w)| w.upgrade()) {
            return Ok(s);
        }
        let std_socket = std::net::UdpSocket::bind(at)?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(TunnelSocket {
            socket: UdpSocket::from_std(std_socket)?,
            source,
            channels: Mutex::default(),
            next_port: Mutex::new(FIRST_PORT),
        });
        open.push((at, Arc::downgrade(&socket)));
        tokio::spawn(receive(Arc::downgrade(&socket)));
        Ok(socket)
    }

    /// A channel to `shard` through the remote node at `remote`.
    pub fn channel(self: &Arc<Self>, remote: SocketAddrV4, shard: SocketAddrV4) -> TunnelChannel {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.next_port.lock().unwrap_or_else(|e| e.into_inner());
        while channels.contains_key(&*next) {
            *next = next.checked_add(1).unwrap_or(FIRST_PORT);
        }
        let port = *next;
        *next = next.checked_add(1).unwrap_or(FIRST_PORT);
        channels.insert(port, tx);
        TunnelChannel { socket: self.clone(), port, remote, shard, rx }
    }
}

/// Hands each datagram that came back to the channel its inner destination
/// port names; anything else (a heartbeat, a late answer) is dropped.
async fn receive(socket: Weak<TunnelSocket>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Some(s) = socket.upgrade() else { return };
        let Ok(Ok((n, _))) =
            tokio::time::timeout(std::time::Duration::from_secs(1), s.socket.recv_from(&mut buf)).await
        else {
            continue;
        };
        let Some(inner) = wire::parse(&buf[..n]) else { continue };
        if *inner.dst.ip() != s.source {
            continue;
        }
        let channels = s.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = channels.get(&inner.dst.port()) {
            let _ = tx.send((inner.src, inner.payload.to_vec()));
        }
    }
}

/// One probe's conversation with a shard through the tunnel.
pub struct TunnelChannel {
    socket: Arc<TunnelSocket>,
    port: u16,
    remote: SocketAddrV4,
    shard: SocketAddrV4,
    rx: mpsc::UnboundedReceiver<(SocketAddrV4, Vec<u8>)>,
}

impl TunnelChannel {
    pub async fn send(&self, payload: &[u8]) -> io::Result<usize> {
        let me = SocketAddrV4::new(self.socket.source, self.port);
        let packet = wire::inner_packet(me, self.shard, payload);
        self.socket.socket.send_to(&packet, self.remote).await?;
        Ok(payload.len())
    }

    /// The next answer from the shard (others are skipped).
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some((from, payload)) = self.rx.recv().await else {
                return Err(io::Error::other("the tunnel socket closed"));
            };
            if from == self.shard {
                let n = payload.len().min(buf.len());
                buf[..n].copy_from_slice(&payload[..n]);
                return Ok(n);
            }
        }
    }
}

impl Drop for TunnelChannel {
    fn drop(&mut self) {
        self.socket.channels.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.port);
    }
}
