//! The sites' families: what the probes through each tunnel saw.

use super::metrics::Scrape;
use crate::control::views::StatusView;

/// Each site's probe round trip: the mean of its shards' last answered
/// probe, which went through the site's tunnel as the players' packets do.
pub(super) fn sites(r: &Scrape, st: &StatusView) -> prometheus::Result<()> {
    let mut by_site: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for s in &st.shards {
        if let (Some(site), Some(ms)) = (&s.site, s.rtt_ms) {
            by_site.entry(site).or_default().push(ms);
        }
    }
    if by_site.is_empty() {
        return Ok(());
    }
    let rtt = r.gauge(
        "samp_proxy_site_probe_rtt_seconds",
        "Mean round trip of the site's shards' last answered probes, through its tunnel",
        &["site"],
    )?;
    for (site, ms) in by_site {
        rtt.with_label_values(&[site]).set(ms.iter().sum::<f64>() / ms.len() as f64 / 1000.0);
    }
    Ok(())
}
