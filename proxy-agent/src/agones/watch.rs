//! Follows the GameServers of one namespace with kube-rs's watcher (a list,
//! then a watch from its resourceVersion; on 410 Gone or a broken stream it
//! lists again) and hands the owner the whole namespace after every change.

use std::collections::BTreeMap;

use futures::StreamExt;
use kube::{
    api::{DynamicObject, ListParams},
    runtime::{watcher, WatchStreamExt},
    Api,
};

use super::{
    allocate::{gameserver_resource, to_value},
    gameserver::GameServer,
};

/// Where the watch reports to.
pub trait Sink: Send + 'static {
    /// Every GameServer of the namespace, after each change.
    fn gameservers(&self, namespace: &str, list: Vec<GameServer>);
    /// The watch failed (it retries with back-off) or works again (None).
    fn api_error(&self, error: Option<String>);
}

pub async fn follow(client: kube::Client, namespace: String, sink: impl Sink) {
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &gameserver_resource());
    let mut stream = watcher(api.clone(), watcher::Config::default()).default_backoff().boxed();
    let mut known: BTreeMap<String, GameServer> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, GameServer>> = None;
    let mut failing = false;
    // A watch that resumes says nothing until something changes: while it
    // is failing, a small list every second tells when the API is back.
    let mut check = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = stream.next() => match event {
                Some(e) => e,
                None => return,
            },
            _ = check.tick(), if failing => {
                let params = ListParams::default().limit(1);
                if let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_secs(2), api.list(&params)).await {
                    failing = false;
                    sink.api_error(None);
                }
                continue;
            }
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                failing = true;
                sink.api_error(Some(format!("watching GameServers in {namespace}: {e}")));
                continue;
            }
        };
        if failing {
            failing = false;
            sink.api_error(None);
        }
        let read = |o: &DynamicObject| GameServer::from_object(&to_value(o));
        let changed = match event {
            watcher::Event::Init => {
                listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(o) => {
                if let (Some(list), Some(gs)) = (listing.as_mut(), read(&o)) {
                    list.insert(gs.name.clone(), gs);
                }
                false
            }
            // A fresh list replaces what the watch knew: objects deleted
            // while it was away are gone from it.
            watcher::Event::InitDone => {
                known = listing.take().unwrap_or_default();
                true
            }
            watcher::Event::Apply(o) => {
                read(&o).is_some_and(|gs| known.insert(gs.name.clone(), gs.clone()) != Some(gs))
            }
            watcher::Event::Delete(o) => read(&o).is_some_and(|gs| known.remove(&gs.name).is_some()),
        };
        if changed {
            sink.gameservers(&namespace, known.values().cloned().collect());
        }
    }
}
