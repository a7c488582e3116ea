//! The resources the stand-in stores, and how each one is named on the wire.

/// A stored resource type. (GameServerAllocations are not stored: Agones
/// answers them and keeps nothing, see `allocation`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `agones.dev/v1` `GameServer`, a custom resource.
    GameServer,
    /// `coordination.k8s.io/v1` `Lease`, a built-in type.
    Lease,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::GameServer, Kind::Lease];

    pub fn group(self) -> &'static str {
        match self {
            Kind::GameServer => "agones.dev",
            Kind::Lease => "coordination.k8s.io",
        }
    }

    pub fn version(self) -> &'static str {
        "v1"
    }

    /// `group/version`, as objects carry it in `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::GameServer => "agones.dev/v1",
            Kind::Lease => "coordination.k8s.io/v1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::GameServer => "GameServer",
            Kind::Lease => "Lease",
        }
    }

    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::GameServer => "GameServerList",
            Kind::Lease => "LeaseList",
        }
    }

    /// The resource name in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::GameServer => "gameservers",
            Kind::Lease => "leases",
        }
    }

    /// `gameservers.agones.dev`: how error messages name the resource.
    pub fn qualified(self) -> String {
        format!("{}.{}", self.plural(), self.group())
    }

    /// The kind served at `/apis/{group}/{version}/.../{plural}`, if any.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.group() == group && k.version() == version && k.plural() == plural)
    }

    /// A DELETE of a custom resource answers with the object; a built-in
    /// type such as Lease answers with a `Success` Status (the API server's
    /// `ReturnDeletedObject`).
    pub fn delete_returns_object(self) -> bool {
        matches!(self, Kind::GameServer)
    }

    /// Built-in types allow a PUT without `metadata.resourceVersion` (an
    /// unconditional update); custom resources answer 422 Invalid.
    pub fn allows_unconditional_update(self) -> bool {
        matches!(self, Kind::Lease)
    }

    /// Built-in types take `application/strategic-merge-patch+json`; custom
    /// resources answer 415. (The stand-in applies it as a merge patch: a
    /// Lease has no list that a strategic merge would treat differently.)
    pub fn takes_strategic_merge(self) -> bool {
        matches!(self, Kind::Lease)
    }
}
