//! `application/x-www-form-urlencoded` bodies (and query strings), as Pawn's
//! `HTTP()` native and the proxy's own nodes send them: strict, so a typo
//! is an error rather than a silently ignored field.

use std::collections::BTreeMap;

/// The fields of one form.
pub struct Fields(BTreeMap<String, String>);

impl Fields {
    /// Takes a required field.
    pub fn take(&mut self, name: &str) -> Result<String, String> {
        self.0.remove(name).ok_or_else(|| format!("missing field `{name}`"))
    }
}

/// Parses `text`: only the `allowed` fields, each at most once.
pub fn parse(text: &str, allowed: &[&str]) -> Result<Fields, String> {
    let mut fields = BTreeMap::new();
    for pair in text.trim_end_matches(['\r', '\n']).split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name)?, decode(value)?);
        if !allowed.contains(&name.as_str()) {
            return Err(format!("unknown field `{name}`; send {}", allowed.join(", ")));
        }
        if fields.insert(name.clone(), value).is_some() {
            return Err(format!("field `{name}` given twice"));
        }
    }
    Ok(Fields(fields))
}

/// Percent-decoding, with `+` for a space.
fn decode(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next(), bytes.next()];
                let digit = |d: Option<u8>| d.and_then(|d| (d as char).to_digit(16));
                match (digit(hex[0]), digit(hex[1])) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => return Err("a bad %-escape in the form".into()),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| "the form is not UTF-8".into())
}
