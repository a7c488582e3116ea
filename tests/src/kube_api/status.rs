//! Failures as the API server reports them: a `Status` object (`kind:
//! Status`, `status: Failure`, a `reason` and the HTTP `code`), the body of
//! every error answer and of a watch's `ERROR` event. kube-rs turns one into
//! `kube::Error::Api(status)`.

use serde_json::{json, Value};

use super::kinds::Kind;

/// A failed request, ready to be answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    /// `NotFound`, `AlreadyExists`, `Conflict`, `Expired`, `Invalid`, ...
    pub reason: &'static str,
    pub message: String,
    /// `{name, group, kind}` when the failure is about one object.
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: None }
    }

    /// An error answer with `code` and the reason the API server uses for it.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        ApiError::new(code, reason_for(code), message)
    }

    fn about(mut self, kind: Kind, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": kind.group(), "kind": kind.plural()}));
        self
    }

    pub fn not_found(kind: Kind, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", kind.qualified())).about(kind, name)
    }

    /// A path nothing is served at.
    pub fn no_route() -> Self {
        let mut e = ApiError::new(404, "NotFound", "the server could not find the requested resource");
        e.details = Some(json!({}));
        e
    }

    pub fn already_exists(kind: Kind, name: &str) -> Self {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", kind.qualified())).about(kind, name)
    }

    /// An update whose `metadata.resourceVersion` is not the object's.
    pub fn conflict(kind: Kind, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                kind.qualified()
            ),
        )
        .about(kind, name)
    }

    /// A DELETE whose preconditions (uid, resourceVersion) do not hold.
    pub fn precondition_failed(kind: Kind, name: &str, what: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what}", kind.qualified()),
        )
        .about(kind, name)
    }

    /// The object is well-formed JSON but not acceptable (422).
    pub fn invalid(kind: Kind, name: &str, problem: &str) -> Self {
        ApiError::new(422, "Invalid", format!("{}.{} \"{name}\" is invalid: {problem}", kind.kind(), kind.group()))
            .about(kind, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format ({content_type}) - accepted media types include: {accepted}"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            s["details"] = details.clone();
        }
        s
    }
}

/// The `reason` the API server gives an HTTP error code
/// (`k8s.io/apimachinery/pkg/api/errors`).
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}
