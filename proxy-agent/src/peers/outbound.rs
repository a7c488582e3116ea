//! One outbound link: dial the peer, prove the secret, send this node's
//! snapshot and then every batch of its own changes, in order. The peer
//! acknowledges each frame once its records are in its maps; the time from
//! a batch's making to its acknowledgement is the replication lag. A link
//! that falls [`QUEUE_BATCHES`](super::QUEUE_BATCHES) behind, or hears no
//! acknowledgement for [`SILENCE`], is dropped and dialled again (a fresh
//! snapshot repairs whatever it missed).

use std::{
    collections::VecDeque,
    net::SocketAddrV4,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{net::TcpStream, sync::broadcast::error::RecvError};

use super::{
    frame::{Kind, Reader, Writer},
    handshake,
    record::{self, Record},
    Board, Outbox, PeersOwner, Settings, KEEPALIVE, SILENCE,
};

/// Records a frame carries at most (about 120 KiB of sessions).
pub const FRAME_RECORDS: usize = 4096;
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

pub struct Link {
    pub addr: SocketAddrV4,
    pub settings: Arc<Settings>,
    pub outbox: Outbox,
    pub board: Arc<Board>,
}

/// Frames sent and not yet acknowledged: (seq, when its batch was made,
/// whether it ends the snapshot).
type InFlight = VecDeque<(u64, Instant, bool)>;

impl Link {
    pub async fn run(self, owner: impl PeersOwner) {
        let mut retry = RETRY_MIN;
        let mut said: Option<String> = None;
        loop {
            let began = Instant::now();
            let why = match self.session(&owner).await {
                Ok(()) => return, // the agent is stopping
                Err(why) => why,
            };
            self.board.out_lost(self.addr, why.clone());
            // One line per distinct reason, not one per retry.
            if said.as_ref() != Some(&why) {
                log::warn!("peer {}: {why}; retrying", self.addr);
                said = Some(why);
            }
            retry = if began.elapsed() > SILENCE { RETRY_MIN } else { (retry * 2).min(RETRY_MAX) };
            tokio::time::sleep(retry).await;
        }
    }

    async fn session(&self, owner: &impl PeersOwner) -> Result<(), String> {
        let mut stream = tokio::time::timeout(RETRY_MAX, TcpStream::connect(self.addr))
            .await
            .map_err(|_| "no answer to the connection".to_string())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let keys = handshake::dial(&mut stream, &self.settings.secret, &self.settings.me)
            .await
            .map_err(|e| format!("handshake failed: {e}"))?;
        let (r, w) = stream.into_split();
        let (mut reader, mut writer) = (Reader::new(r, keys.recv), Writer::new(w, keys.send));
        // Subscribe before taking the snapshot: nothing made in between is lost
        // (what both carry is applied twice, which changes nothing).
        let mut changes = self.outbox.subscribe();
        let began = Instant::now();
        let snapshot = owner.snapshot_records().await.ok_or("the agent is stopping")?;
        self.board.out_connected(self.addr, &keys.peer);
        log::info!("peer {} ({}): connected; sending {} sessions", keys.peer, self.addr, snapshot.len());
        let mut in_flight = InFlight::new();
        let sessions = snapshot.len();
        let bytes = send_all(&mut writer, &snapshot, began, false, &mut in_flight).await?;
        let end = [Record::SnapshotEnd { sessions: sessions as u32 }];
        let ended = send_all(&mut writer, &end, began, true, &mut in_flight).await?;
        self.board.sent(self.addr, sessions, bytes + ended, changes.len());
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            tokio::select! {
                batch = changes.recv() => match batch {
                    Ok(batch) => {
                        let bytes = send_all(&mut writer, &batch.records, batch.made, false, &mut in_flight).await?;
                        self.board.sent(self.addr, batch.records.len(), bytes, changes.len());
                    }
                    Err(RecvError::Lagged(n)) => {
                        self.board.resynced(self.addr);
                        return Err(format!("fell {n} batches behind; reconnecting to send a fresh snapshot"));
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                frame = reader.next() => {
                    let frame = frame.map_err(|e| format!("connection lost: {e}"))?;
                    if let Ok((_, Kind::Ack, payload)) = frame {
                        self.acked(payload, &mut in_flight, began, sessions);
                    }
                }
                _ = keepalive.tick() => {
                    writer.send(Kind::Keepalive, &[]).await.map_err(|e| format!("connection lost: {e}"))?;
                    if let Some((_, made, _)) = in_flight.front() {
                        if made.elapsed() > SILENCE && began.elapsed() > SILENCE {
                            return Err(format!("no acknowledgement for {} s", SILENCE.as_secs()));
                        }
                    }
                }
            }
        }
    }

    fn acked(&self, payload: &[u8], in_flight: &mut InFlight, began: Instant, sessions: usize) {
        let Ok(seq) = payload.try_into().map(u64::from_be_bytes) else { return };
        while in_flight.front().is_some_and(|(s, _, _)| *s <= seq) {
            let (_, made, ends_snapshot) = in_flight.pop_front().expect("front");
            if ends_snapshot {
                self.board.snapshot_sent(self.addr, sessions, began.elapsed());
            } else if made != began {
                self.board.acked(self.addr, made.elapsed());
            }
        }
    }
}

/// Sends records in frames of at most `FRAME_RECORDS`, each noted in flight
/// as made at `made` (`ends_snapshot` for the snapshot's last); returns the
/// bytes on the wire.
async fn send_all<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut Writer<W>,
    records: &[Record],
    made: Instant,
    ends_snapshot: bool,
    in_flight: &mut InFlight,
) -> Result<usize, String> {
    let mut bytes = 0;
    for chunk in records.chunks(FRAME_RECORDS) {
        let (seq, n) = send(w, chunk).await?;
        in_flight.push_back((seq, made, ends_snapshot));
        bytes += n;
    }
    Ok(bytes)
}

/// Sends one frame of records: its seq and its bytes on the wire.
async fn send<W: tokio::io::AsyncWrite + Unpin>(w: &mut Writer<W>, records: &[Record]) -> Result<(u64, usize), String> {
    let mut payload = Vec::with_capacity(records.iter().map(record::size_of).sum());
    records.iter().for_each(|r| r.encode(&mut payload));
    let seq = w.send(Kind::Records, &payload).await.map_err(|e| format!("connection lost: {e}"))?;
    Ok((seq, payload.len() + super::frame::OVERHEAD))
}
