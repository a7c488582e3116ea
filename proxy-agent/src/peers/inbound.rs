//! Peers' connections to this node: the handshake, then every frame's
//! records handed to the owner and acknowledged once applied. What is
//! refused (a wrong secret, another version, a forged, replayed or
//! malformed frame) is counted by reason and logged once per connection;
//! it never reaches the maps, and it ends at most the connection it came on.

use std::sync::Arc;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use super::{
    frame::{Kind, Reader, Writer},
    handshake,
    record::{self, Record},
    Board, PeersOwner, Settings, SILENCE,
};

/// Connections being shaken hands with or served at once, beyond one per
/// peer: a flood of connections waits its turn instead of costing memory.
const SPARE_CONNECTIONS: usize = 16;

pub async fn serve(listener: TcpListener, settings: Arc<Settings>, owner: impl PeersOwner, board: Arc<Board>) {
    let slots = Arc::new(Semaphore::new(settings.dial.len() * 2 + SPARE_CONNECTIONS));
    loop {
        let Ok((stream, from)) = listener.accept().await else { continue };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            board.refused("too_many_connections", None, format!("from {from}"));
            continue; // dropped: closed at once
        };
        let (settings, owner, board) = (settings.clone(), owner.clone(), board.clone());
        tokio::spawn(async move {
            serve_one(stream, from, &settings, &owner, &board).await;
            drop(slot);
        });
    }
}

async fn serve_one(
    mut stream: TcpStream,
    from: std::net::SocketAddr,
    settings: &Settings,
    owner: &impl PeersOwner,
    board: &Board,
) {
    let _ = stream.set_nodelay(true);
    let keys = match handshake::accept(&mut stream, &settings.secret, &settings.me).await {
        Ok(keys) => keys,
        Err(e) => {
            log::warn!("peer connection from {from} refused: {e}");
            board.refused(e.reason(), None, e.to_string());
            return;
        }
    };
    let peer = keys.peer.clone();
    board.in_connected(&peer);
    let (r, w) = stream.into_split();
    let (mut reader, mut writer) = (Reader::new(r, keys.recv), Writer::new(w, keys.send));
    let mut warned = false;
    let why = loop {
        let frame = match tokio::time::timeout(SILENCE, reader.next()).await {
            Err(_) => break format!("silent for {} s", SILENCE.as_secs()),
            Ok(Err(broken)) => {
                if broken.reason() != "closed" {
                    board.refused(broken.reason(), Some(&peer), broken.to_string());
                }
                break broken.to_string();
            }
            Ok(Ok(frame)) => frame,
        };
        let refusal = match frame {
            Ok((seq, Kind::Records, payload)) => match record::decode_all(payload) {
                Ok(records) => {
                    apply(owner, board, &peer, records).await;
                    if writer.send(Kind::Ack, &seq.to_be_bytes()).await.is_err() {
                        break "connection lost while acknowledging".into();
                    }
                    None
                }
                Err(bad) => Some(("bad_record", format!("a frame with {bad}; none of it applied"))),
            },
            Ok(_) => None, // keepalives; acks are not expected this way
            Err(refused) => Some((refused.reason(), refused.to_string())),
        };
        if let Some((reason, why)) = refusal {
            board.refused(reason, Some(&peer), why.clone());
            if !std::mem::replace(&mut warned, true) {
                log::warn!(
                    "peer {peer} ({from}): refused {why} (counted; further refusals on this connection are not logged)"
                );
            }
        }
    };
    board.in_lost(&peer);
    log::info!("peer {peer} ({from}): inbound link closed: {why}");
}

async fn apply(owner: &impl PeersOwner, board: &Board, peer: &str, records: Vec<Record>) {
    board.received(peer, records.len());
    let snapshot_end = records.iter().find_map(|r| match r {
        Record::SnapshotEnd { sessions } => Some(*sessions),
        _ => None,
    });
    owner.peer_records(peer.to_string(), records).await;
    if let Some(sessions) = snapshot_end {
        board.snapshot_received(peer, sessions);
        log::info!("peer {peer}: its snapshot of {sessions} sessions is applied");
    }
}
