//! The owner over in-memory maps, without root: messages in, events, parked
//! shards, map contents and commands to Kubernetes out. The failover paths
//! of listed and Agones shards: a listed standby, the roomiest active
//! shard, parked, and an allocation answered, refused, or late.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{mpsc, Arc},
    time::Duration,
};

use proxy_common::{
    net::{addr_to_map, port_to_map},
    Session, SessionKey,
};
use tokio::sync::{mpsc::UnboundedReceiver, watch};

use super::{Links, Msg, NodeLinks, Owner, Start};
use crate::{
    agones::{
        self,
        allocate::{Answer, Ask, Purpose},
        gameserver::GameServer,
        lease::Leadership,
        Command,
    },
    cluster::{now_ns, Cluster},
    config,
    control::{
        protocol::Request,
        views::{Event, Reply},
    },
    dataplane::{fake_maps::FakeMaps, session_events::SessionEvents},
    events::EventKind,
    health::{ProbeOutcome, ProbeResult, UrgentProbe},
    query::ResponderCounts,
};

/// s1 (10 slots) and s2 (20) active, s3 (30) a standby.
const LISTED: &str = "
interfaces: [lo]
frontends:
  - name: play
    address: 198.18.100.1:7777
shards:
  - {name: s1, address: 198.18.50.1, capacity: 10}
  - {name: s2, address: 198.18.50.2, capacity: 20}
  - {name: s3, address: 198.18.50.3, capacity: 30, role: standby}
";

/// Every shard a GameServer of namespace `game`.
const AGONES: &str = "
interfaces: [lo]
frontends:
  - name: play
    address: 198.18.100.1:7777
    agones:
      namespace: game
      labels: {samp-proxy.dev/frontend: play}
      pool_labels: {agones.dev/fleet: shards}
kubernetes:
  api_url: http://198.18.0.9:6443
  identity: replica-a
  lease_duration_ms: 2000
  allocation_timeout_ms: 500
";

pub(super) struct Bed {
    pub(super) owner: Owner,
    pub(super) maps: FakeMaps,
    _urgent: UnboundedReceiver<UrgentProbe>,
    commands: UnboundedReceiver<Command>,
}

fn bed(yaml: &str) -> Bed {
    bed_with(yaml, None)
}

/// A bed whose owner shares its sessions through `peers`.
pub(super) fn bed_with(yaml: &str, peers: Option<super::PeerLinks>) -> Bed {
    let cfg = config::parse("test", yaml).expect("a valid test config");
    let dir = std::env::temp_dir().join(format!(
        "owner-test-{}-{:?}-{}",
        std::process::id(),
        std::thread::current().id(),
        peers.as_ref().map_or("", |p| p.node.as_str())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("proxy.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    let maps = FakeMaps::new();
    let cluster = Cluster::start(cfg.clone(), maps.clone()).expect("start over fake maps");
    let (urgent_probes, urgent) = tokio::sync::mpsc::unbounded_channel();
    let (handle, commands) = agones::channel();
    let links = Links {
        leases: None,
        agones: cfg.uses_agones().then_some(handle),
        node: NodeLinks::Ingress { urgent_probes },
        peers,
        decider: None,
    };
    let start = Start {
        cluster,
        config_path,
        ring: SessionEvents::detached(),
        responder_counts: Arc::new(ResponderCounts::default()),
        scanner: mpsc::channel().0,
        links,
    };
    let owner = Owner::new(start, watch::channel(Arc::default()).0);
    Bed { owner, maps, _urgent: urgent, commands }
}

impl Bed {
    /// `n` established players on shard `name`, in its home group.
    pub(super) fn seat(&mut self, name: &str, n: u8) {
        let i = self.owner.cluster.shard(name).unwrap();
        let group = self.owner.cluster.ids[i].home_group;
        let epoch = self.owner.cluster.group(group).epoch;
        for k in 1..=n {
            let key = SessionKey {
                client_addr: addr_to_map(Ipv4Addr::new(198, 19, i as u8, k).octets()),
                client_port: port_to_map(5000),
                frontend: 0,
            };
            self.maps.insert_session(false, key, Session { group, epoch, last_seen_ns: now_ns() }).unwrap();
        }
        self.owner.cluster.rescan().unwrap();
    }

    /// Probes found `name` refusing (its process gone): down at once.
    pub(super) fn crash(&mut self, name: &str) {
        self.owner.handle(Msg::HealthRound(vec![(name.to_string(), ProbeOutcome::Refused)]));
    }

    fn events(&mut self, kind: EventKind) -> Vec<Event> {
        let Ok(Reply::Events(all)) = self.owner.control(Request::Events) else { panic!("no events") };
        all.into_iter().filter(|e| e.kind == kind).collect()
    }

    pub(super) fn players_on(&self, name: &str) -> usize {
        let c = &self.owner.cluster;
        c.players_on(c.shard(name).unwrap(), &c.loads())
    }

    fn parked(&self) -> Vec<String> {
        self.owner.parked.clone()
    }

    /// The next command sent to the Kubernetes task, if any.
    fn command(&mut self) -> Option<Command> {
        self.commands.try_recv().ok()
    }

    /// A probe of `name` answered: `slots` slots, none taken.
    pub(super) fn answered(&mut self, name: &str, slots: u16) {
        let result = ProbeResult { rtt: Duration::from_millis(1), info: Some((0, slots)), answers: None };
        self.owner.handle(Msg::HealthRound(vec![(name.to_string(), ProbeOutcome::Answered(result))]));
    }

    fn gameservers(&mut self, list: Vec<GameServer>) {
        self.owner.handle(Msg::GameServers("game".into(), list));
    }

    fn lead(&mut self) {
        self.owner.handle(Msg::Leadership(Leadership { leading: true, holder: Some("replica-a".into()), error: None }));
    }
}

fn gameserver(name: &str, state: &str, last_octet: u8) -> GameServer {
    let mut labels = BTreeMap::from([("agones.dev/fleet".to_string(), "shards".to_string())]);
    if state == "Allocated" {
        labels.insert("samp-proxy.dev/frontend".into(), "play".into());
    }
    GameServer {
        namespace: "game".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        labels,
        annotations: BTreeMap::new(),
        state: state.into(),
        pod_ip: Some(Ipv4Addr::new(198, 18, 50, last_octet)),
        ports: vec![7777],
    }
}

#[test]
fn a_crashed_listed_shard_fails_over_to_the_empty_standby() {
    let mut b = bed(LISTED);
    b.seat("s1", 5);
    b.crash("s1");
    let failovers = b.events(EventKind::Failover);
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    assert_eq!(failovers[0].target.as_deref(), Some("s3"));
    assert_eq!(failovers[0].detail, "5 players moving together to s3");
    assert_eq!(b.players_on("s3"), 5);
    assert_eq!(b.events(EventKind::HealthDown).len(), 1);
    assert!(b.parked().is_empty());
}

#[test]
fn without_a_free_standby_the_roomiest_active_shard_takes_the_group() {
    let mut b = bed(LISTED);
    b.seat("s3", 1); // the standby serves a group now: an active shard like any
    b.seat("s1", 5);
    b.crash("s1");
    let failovers = b.events(EventKind::Failover);
    assert_eq!(failovers[0].target.as_deref(), Some("s3"), "29 free on s3 beat 20 on s2");
    b.seat("s2", 15);
    b.crash("s3");
    let f = b.events(EventKind::Failover);
    assert_eq!(f.len(), 1, "no second failover: {f:?}");
    // s3's 6 players: s2 has 5 free, s1 is down: nobody has room.
    assert_eq!(b.parked(), vec!["s3".to_string()]);
    let p = b.events(EventKind::FailoverParked);
    assert_eq!(p.len(), 1, "{p:?}");
}

#[test]
fn no_room_parks_and_the_next_round_with_room_moves_them() {
    let mut b = bed(LISTED);
    b.seat("s2", 18);
    b.seat("s3", 25);
    b.seat("s1", 8);
    b.crash("s1");
    assert_eq!(b.parked(), vec!["s1".to_string()]);
    let parked = b.events(EventKind::FailoverParked);
    assert!(parked[0].detail.contains("retried as soon as capacity appears"), "{}", parked[0].detail);
    // Every round retries it; the event was said once.
    b.owner.handle(Msg::HealthRound(vec![("s2".into(), ProbeOutcome::Silent)]));
    assert_eq!(b.events(EventKind::FailoverParked).len(), 1);
    assert_eq!(b.parked(), vec!["s1".to_string()]);
    // The standby grows (a reload): the next round moves them, once.
    let bigger = LISTED.replace("capacity: 30, role: standby", "capacity: 40, role: standby");
    std::fs::write(&b.owner.config_path, bigger).unwrap();
    b.owner.control(Request::Reload).expect("reload");
    b.owner.handle(Msg::HealthRound(vec![("s2".into(), ProbeOutcome::Silent)]));
    assert!(b.parked().is_empty());
    assert_eq!(b.players_on("s3"), 33);
    assert_eq!(b.events(EventKind::Failover).len(), 1);
}

/// An Agones cluster with gs1 and gs2 Allocated, this replica the decider,
/// `players` on gs1, which then crashes: the allocation it asks for.
fn agones_crash(players: u8) -> (Bed, Ask) {
    let mut b = bed(AGONES);
    b.gameservers(vec![gameserver("gs1", "Allocated", 1), gameserver("gs2", "Allocated", 2)]);
    b.lead();
    b.answered("gs1", 50);
    b.answered("gs2", 50);
    b.seat("gs1", players);
    b.crash("gs1");
    let Some(Command::Allocate(ask)) = b.command() else { panic!("the decider asks for a fresh shard") };
    assert_eq!(ask.purpose, Purpose::Failover { dead: "gs1".into() });
    assert_eq!(b.parked(), vec!["gs1".to_string()], "parked while the allocation is asked");
    // Another round before the answer asks nothing more.
    b.crash("gs1");
    assert!(b.command().is_none(), "one allocation for one failure");
    (b, ask)
}

#[test]
fn an_answered_allocation_takes_the_whole_group_and_is_recorded() {
    let (mut b, ask) = agones_crash(4);
    let fresh = gameserver("gs3", "Allocated", 3);
    b.owner.handle(Msg::Allocation(ask, Answer::Allocated(fresh), Duration::from_millis(40)));
    assert!(b.owner.cluster.shard("gs3").is_ok(), "the fresh GameServer is a shard at once");
    let failovers = b.events(EventKind::Failover);
    assert_eq!(failovers.len(), 1);
    assert_eq!(failovers[0].detail, "4 players moving together to fresh GameServer gs3 (allocated in 40 ms)");
    assert_eq!(b.players_on("gs3"), 4);
    assert!(b.parked().is_empty());
    let Some(Command::Annotate { name, annotations, .. }) = b.command() else { panic!("the decider records it") };
    assert_eq!(name, "gs3");
    assert_eq!(annotations["samp-proxy.dev/serves"], "gs1");
}

#[test]
fn a_refused_allocation_falls_back_to_the_rule_and_records_the_fallback() {
    let (mut b, ask) = agones_crash(4);
    b.owner.handle(Msg::Allocation(ask, Answer::UnAllocated, Duration::from_millis(3)));
    let failovers = b.events(EventKind::Failover);
    assert_eq!(failovers.len(), 1);
    assert!(failovers[0].detail.contains("roomiest active shard, gs2"), "{}", failovers[0].detail);
    assert_eq!(b.players_on("gs2"), 4);
    let Some(Command::Annotate { name, .. }) = b.command() else { panic!("the fallback is recorded") };
    assert_eq!(name, "gs2");
}

#[test]
fn a_late_allocation_moves_nobody_who_already_moved() {
    let (mut b, ask) = agones_crash(4);
    // The operator moved them meanwhile.
    let moved = b.owner.control(Request::Failover { shard: "gs1".into(), to: Some("gs2".into()) });
    assert!(moved.is_ok(), "{moved:?}");
    b.owner.handle(Msg::Allocation(ask, Answer::Allocated(gameserver("gs3", "Allocated", 3)), Duration::ZERO));
    assert_eq!(b.players_on("gs2"), 4);
    assert_eq!(b.players_on("gs3"), 0, "the fresh shard just serves newcomers");
    assert_eq!(b.events(EventKind::Failover).len(), 1, "the manual one only");
}

#[test]
fn a_follower_waits_for_the_deciders_record_then_applies_it() {
    let mut b = bed(AGONES);
    b.gameservers(vec![gameserver("gs1", "Allocated", 1), gameserver("gs2", "Allocated", 2)]);
    b.owner.handle(Msg::Leadership(Leadership { leading: false, holder: Some("replica-b".into()), error: None }));
    b.seat("gs1", 3);
    b.crash("gs1");
    assert!(b.command().is_none(), "a follower allocates nothing");
    assert_eq!(b.parked(), vec!["gs1".to_string()]);
    let mut gs2 = gameserver("gs2", "Allocated", 2);
    gs2.annotations.insert("samp-proxy.dev/serves".into(), "gs1".into());
    b.gameservers(vec![gameserver("gs1", "Allocated", 1), gs2]);
    let failovers = b.events(EventKind::Failover);
    assert_eq!(failovers.len(), 1);
    assert_eq!(failovers[0].detail, "3 players moving together to gs2 (the decider's record)");
    assert!(b.parked().is_empty());
}
