//! The objects, as etcd behind an API server keeps them: one cluster-wide
//! resourceVersion counter (every write takes the next number, whatever
//! its resource), the fields the server owns (`uid`, `creationTimestamp`,
//! `resourceVersion`, `generation`), optimistic concurrency on
//! `metadata.resourceVersion`, and a history of changes that watches replay
//! from a resourceVersion, up to the compaction point.

use std::{
    collections::{BTreeMap, VecDeque},
    time::SystemTime,
};

use serde_json::{json, Value};
use tokio::sync::watch;

use super::{clock, kinds::Kind, status::ApiError};

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Key {
        Key { kind, namespace: namespace.to_string(), name: name.to_string() }
    }
}

/// One write: `before` is None for a creation, `after` None for a deletion.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub key: Key,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// A watch asked for changes the history no longer holds.
#[derive(Debug, Clone, Copy)]
pub struct TooOld {
    pub requested: u64,
    pub compacted: u64,
}

impl TooOld {
    /// The Status of the `ERROR` event the API server sends for it.
    pub fn error(self) -> ApiError {
        ApiError::expired(format!("too old resource version: {} ({})", self.requested, self.compacted))
    }
}

/// How many changes watches can replay; older ones are compacted away.
const HISTORY: usize = 10_000;
/// The counter's first value: no real cluster is at resourceVersion 1.
const FIRST_RV: u64 = 1000;

pub struct Store {
    last_rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
    /// A watch from a resourceVersion below this one is too old (410).
    compacted: u64,
    /// Carries `last_rv` to the watches after every write.
    pulse: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            last_rv: FIRST_RV,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: FIRST_RV,
            pulse: watch::Sender::new(FIRST_RV),
        }
    }
}

impl Store {
    pub fn last_rv(&self) -> u64 {
        self.last_rv
    }

    /// Wakes whenever something was written (or history was compacted).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.pulse.subscribe()
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `kind` in `namespace` (every namespace for None), in
    /// namespace then name order, as etcd's key order lists them.
    pub fn list<'a>(
        &'a self,
        kind: Kind,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| k.kind == kind && namespace.is_none_or(|ns| k.namespace == ns))
    }

    /// The changes after `rv`, oldest first; Err once they were compacted.
    pub fn changes_after(&self, rv: u64) -> Result<impl Iterator<Item = &Change>, TooOld> {
        if rv < self.compacted {
            return Err(TooOld { requested: rv, compacted: self.compacted });
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self.history.range(start..))
    }

    /// Forgets every change so far (etcd compaction): a watch from any
    /// resourceVersion before now is too old. The counter moves on by one,
    /// as it would for a write elsewhere in the cluster, so a list made
    /// after this gives a resourceVersion a new watch can start from.
    pub fn compact_all(&mut self) {
        self.last_rv += 1;
        self.compacted = self.last_rv;
        self.history.clear();
        self.pulse.send_replace(self.last_rv);
    }

    /// POST: a new object in `namespace`.
    pub fn create(&mut self, kind: Kind, namespace: &str, mut obj: Value) -> Result<Value, ApiError> {
        check_shape(kind, &obj)?;
        let meta = obj.as_object_mut().expect("checked").entry("metadata").or_insert_with(|| json!({}));
        let name = match meta["name"].as_str().filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => match meta["generateName"].as_str().filter(|n| !n.is_empty()) {
                Some(prefix) => format!("{prefix}{}", clock::random_suffix(5)),
                None => {
                    return Err(ApiError::invalid(
                        kind,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ))
                }
            },
        };
        check_name(kind, &name)?;
        check_namespace(meta, namespace)?;
        if meta["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::internal("resourceVersion should not be set on objects to be created"));
        }
        let key = Key::new(kind, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind());
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        meta["namespace"] = json!(namespace);
        meta["uid"] = json!(clock::new_uid());
        meta["creationTimestamp"] = json!(clock::rfc3339_seconds(SystemTime::now()));
        meta["generation"] = json!(1);
        Ok(self.commit(key, None, Some(obj)).expect("a creation stores an object"))
    }

    /// PUT, PATCH and the test's own edits: `edit` changes a copy of the
    /// object; a `metadata.resourceVersion` it leaves that is not the
    /// current one is a conflict (that is how two writers race). An edit
    /// that changes nothing writes nothing, as on a real server.
    pub fn update(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        edit: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let key = Key::new(kind, namespace, name);
        let current = self.objects.get(&key).ok_or_else(|| ApiError::not_found(kind, name))?.clone();
        let mut next = current.clone();
        edit(&mut next)?;
        check_shape(kind, &next)?;
        let meta = &next["metadata"];
        if let Some(other) = meta["name"].as_str().filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({other}) does not match the name on the URL ({name})"
            )));
        }
        check_namespace(meta, namespace)?;
        let current_rv = current["metadata"]["resourceVersion"].clone();
        if meta["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty() && Some(rv) != current_rv.as_str()) {
            return Err(ApiError::conflict(kind, name));
        }
        let current_uid = &current["metadata"]["uid"];
        if let Some(uid) = meta["uid"].as_str().filter(|u| !u.is_empty() && Some(*u) != current_uid.as_str()) {
            return Err(ApiError::precondition_failed(
                kind,
                name,
                &format!("UID in precondition: {uid}, UID in object meta: {}", current_uid.as_str().unwrap_or("")),
            ));
        }
        // The fields the server owns.
        next["apiVersion"] = json!(kind.api_version());
        next["kind"] = json!(kind.kind());
        for field in ["name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation"] {
            next["metadata"][field] = current["metadata"][field].clone();
        }
        if next == current {
            return Ok(current);
        }
        if next.get("spec") != current.get("spec") {
            let generation = current["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
            next["metadata"]["generation"] = json!(generation);
        }
        Ok(self.commit(key, Some(current), Some(next)).expect("an update stores an object"))
    }

    /// DELETE, with the optional `preconditions` of its DeleteOptions. The
    /// answer is the object as it was, at the deletion's resourceVersion.
    pub fn delete(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        preconditions: &Value,
    ) -> Result<Value, ApiError> {
        let key = Key::new(kind, namespace, name);
        let current = self.objects.get(&key).ok_or_else(|| ApiError::not_found(kind, name))?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(wanted) = preconditions[field].as_str() {
                let actual = current["metadata"][field].as_str().unwrap_or("");
                if wanted != actual {
                    return Err(ApiError::precondition_failed(
                        kind,
                        name,
                        &format!("{label} in precondition: {wanted}, {label} in object meta: {actual}"),
                    ));
                }
            }
        }
        let current = current.clone();
        self.commit(key, Some(current.clone()), None);
        let mut gone = current;
        gone["metadata"]["resourceVersion"] = json!(self.last_rv.to_string());
        Ok(gone)
    }

    /// Writes `after` (or removes the object) at the next resourceVersion,
    /// records the change and wakes the watches.
    fn commit(&mut self, key: Key, before: Option<Value>, mut after: Option<Value>) -> Option<Value> {
        self.last_rv += 1;
        let rv = self.last_rv;
        match &mut after {
            Some(obj) => {
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.objects.insert(key.clone(), obj.clone());
            }
            None => {
                self.objects.remove(&key);
            }
        }
        self.history.push_back(Change { rv, key, before, after: after.clone() });
        while self.history.len() > HISTORY {
            let dropped = self.history.pop_front().expect("non-empty");
            self.compacted = dropped.rv;
        }
        self.pulse.send_replace(rv);
        after
    }
}

/// What the API server's decoder would refuse with 400.
fn check_shape(kind: Kind, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    for (field, expected) in [("apiVersion", kind.api_version()), ("kind", kind.kind())] {
        if let Some(given) = obj.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()) {
            if given != expected {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({given}) does not match the expected {field} ({expected})"
                )));
            }
        }
    }
    let meta = &obj["metadata"];
    if !(meta.is_null() || meta.is_object()) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    for field in ["labels", "annotations"] {
        match &meta[field] {
            Value::Null => {}
            Value::Object(m) if m.values().all(Value::is_string) => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal into Go struct field ObjectMeta.metadata.{field} of type map[string]string"
                )))
            }
        }
    }
    Ok(())
}

/// A lowercase RFC 1123 subdomain, as object names must be.
fn check_name(kind: Kind, name: &str) -> Result<(), ApiError> {
    let ok = name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            kind,
            name,
            &format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"),
        ))
    }
}

fn check_namespace(meta: &Value, namespace: &str) -> Result<(), ApiError> {
    match meta["namespace"].as_str() {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"holderIdentity": "a"}})
    }

    #[test]
    fn writes_take_increasing_resource_versions_and_keep_server_fields() {
        let mut s = Store::default();
        let a = s.create(Kind::Lease, "ns", lease("a")).unwrap();
        let rv_a: u64 = a["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        let b = s.create(Kind::GameServer, "ns", json!({"metadata": {"name": "b"}})).unwrap();
        let rv_b: u64 = b["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        assert!(rv_b > rv_a);
        assert_eq!(a["kind"], "Lease");
        assert_eq!(a["metadata"]["generation"], 1);
        assert!(
            matches!(s.create(Kind::Lease, "ns", lease("a")), Err(e) if e.code == 409 && e.reason == "AlreadyExists")
        );
        let same = s.update(Kind::Lease, "ns", "a", |_| Ok(())).unwrap();
        assert_eq!(same, a, "a no-op update writes nothing");
        let stale = s.update(Kind::Lease, "ns", "a", |o| {
            o["metadata"]["resourceVersion"] = json!("1");
            Ok(())
        });
        assert!(matches!(stale, Err(e) if e.code == 409 && e.reason == "Conflict"));
        let renewed = s
            .update(Kind::Lease, "ns", "a", |o| {
                o["spec"]["holderIdentity"] = json!("b");
                o["metadata"]["uid"] = Value::Null;
                Ok(())
            })
            .unwrap();
        assert_eq!(renewed["metadata"]["uid"], a["metadata"]["uid"]);
        assert_eq!(renewed["metadata"]["generation"], 2);
    }

    #[test]
    fn history_replays_and_compacts() {
        let mut s = Store::default();
        let start = s.last_rv();
        s.create(Kind::Lease, "ns", lease("a")).unwrap();
        s.delete(Kind::Lease, "ns", "a", &Value::Null).unwrap();
        let changes: Vec<_> =
            s.changes_after(start).unwrap().map(|c| (c.before.is_some(), c.after.is_some())).collect();
        assert_eq!(changes, [(false, true), (true, false)]);
        s.compact_all();
        let err = s.changes_after(start).err().unwrap().error();
        assert_eq!((err.code, err.reason), (410, "Expired"));
        assert_eq!(s.changes_after(s.last_rv()).unwrap().count(), 0);
    }
}
