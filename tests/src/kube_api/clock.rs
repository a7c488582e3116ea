//! Timestamps written the way the API server writes them, and object uids.
//! (No date crate: a civil-from-days conversion is a few lines.)

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// `2026-12-02T03:00:00Z`: a `metav1.Time` such as `creationTimestamp`,
/// which the API server keeps to the second.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    let (secs, _) = since_epoch(t);
    let (date, time) = split(secs);
    format!("{date}T{time}Z")
}

/// `2026-12-02T03:00:00.123456789Z` with trailing zeros trimmed: Go's
/// `time.RFC3339Nano`, what Agones writes in `agones.dev/last-allocated`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let (secs, nanos) = since_epoch(t);
    let (date, time) = split(secs);
    if nanos == 0 {
        return format!("{date}T{time}Z");
    }
    let fraction = format!("{nanos:09}");
    format!("{date}T{time}.{}Z", fraction.trim_end_matches('0'))
}

/// A random version-4 UUID, as `metadata.uid` looks.
pub fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// `n` characters from the alphabet the API server uses for `generateName`.
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = random_u64();
    (0..n)
        .map(|_| {
            let c = ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char;
            bits /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// 64 unpredictable bits: std's per-process random hash keys, fed a counter.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn since_epoch(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(_) => (0, 0),
    }
}

/// `YYYY-MM-DD` and `HH:MM:SS` of a Unix time (UTC).
fn split(secs: i64) -> (String, String) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_180_400) + Duration::from_micros(123_456);
        assert_eq!(rfc3339_seconds(t), "2026-12-02T03:00:00Z");
        assert_eq!(rfc3339_nanos(t), "2026-12-02T03:00:00.123456Z");
        assert_eq!(rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn uids_look_like_uuids_and_differ() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
