//! The Kubernetes client: the configured URL, else the pod's service
//! account, else the kubeconfig. `http://` URLs work too (kube's connector
//! takes both), which is how the tests reach their stand-in API server.

use anyhow::{Context, Result};

use crate::config::KubernetesConfig;

pub async fn connect(k: &KubernetesConfig) -> Result<kube::Client> {
    let mut config = match &k.api_url {
        Some(url) => kube::Config::new(url.parse().with_context(|| format!("`kubernetes.api_url` {url}"))?),
        None => kube::Config::infer().await.context(
            "finding the Kubernetes API: not in a pod with a service account and no kubeconfig; set `kubernetes.api_url`",
        )?,
    };
    // kube would resend a request answered 429/503/504, POSTs included: a
    // GameServerAllocation sent twice can allocate two shards. Every caller
    // here has its own retry (the watcher's back-off, the Lease's rounds,
    // the record's loop, the parked failover's next round).
    config.default_retry = false;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The namespace the Lease lives in.
pub fn lease_namespace(k: &KubernetesConfig) -> String {
    k.lease_namespace.clone().or_else(|| std::env::var("POD_NAMESPACE").ok()).unwrap_or_else(|| "default".into())
}

/// This replica's name in the Lease.
pub fn identity(k: &KubernetesConfig) -> String {
    if let Some(id) = &k.identity {
        return id.clone();
    }
    if let Ok(pod) = std::env::var("POD_NAME") {
        return pod;
    }
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if ok {
        String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(0)]).into_owned()
    } else {
        String::new()
    };
    format!("{}-{}", if host.is_empty() { "samp-proxy" } else { &host }, std::process::id())
}
