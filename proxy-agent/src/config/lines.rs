//! Finds the line of a field in YAML text, so semantic errors (found after
//! parsing, where serde_yaml keeps no positions) can still name their line.
//! It understands the block style operators write, with flow lists on one
//! line; for anything else it gives up and the error goes without a line.

struct Line<'a> {
    /// 1-based line number.
    no: usize,
    indent: usize,
    /// Starts with `- `: a sequence item.
    item: bool,
    /// Text after the indent and any `- `.
    content: &'a str,
    /// Column where `content` starts: the indent of the key an item line carries.
    content_col: usize,
}

impl Line<'_> {
    /// Indent of the key this line carries (after a `- ` for an item).
    fn key_indent(&self) -> usize {
        self.content_col
    }
}

fn lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
                return None;
            }
            let indent = raw.len() - trimmed.len();
            let (item, content) = match trimmed.strip_prefix('-') {
                Some(rest) if rest.is_empty() || rest.starts_with(' ') => (true, rest.trim_start()),
                _ => (false, trimmed),
            };
            let content_col = raw.len() - content.len();
            Some(Line { no: i + 1, indent, item, content, content_col })
        })
        .collect()
}

fn is_key(content: &str, key: &str) -> bool {
    let content = content.trim_start_matches(['"', '\'']);
    content.strip_prefix(key).map(|rest| rest.trim_start_matches(['"', '\'']).starts_with(':')).unwrap_or(false)
}

/// The 1-based line of `path` in `text`, if it can be found.
pub fn locate(text: &str, path: &[PathPart<'_>]) -> Option<usize> {
    let all = lines(text);
    let mut scope: &[Line<'_>] = &all;
    // True when scope[0] is a `- ` line whose content is the item's first key.
    let mut item_scope = false;
    let mut found = None;
    for part in path {
        match *part {
            PathPart::Key(key) => {
                let top = if item_scope {
                    scope.first()?.key_indent()
                } else {
                    scope.iter().filter(|l| !l.item).map(|l| l.indent).min()?
                };
                let pos = scope.iter().enumerate().position(|(i, l)| {
                    let carries_key = !l.item || (item_scope && i == 0);
                    carries_key && l.key_indent() == top && is_key(l.content, key)
                })?;
                let line = &scope[pos];
                found = Some(line.no);
                let depth = line.key_indent();
                let rest = &scope[pos + 1..];
                let children = rest.iter().take_while(|l| l.indent > depth || (l.item && l.indent == depth)).count();
                scope = &rest[..children];
                item_scope = false;
            }
            PathPart::Index(n) => {
                let Some(indent) = scope.iter().filter(|l| l.item).map(|l| l.indent).min() else {
                    // A flow list (`[a, b]`) on the key's own line.
                    return found;
                };
                let starts: Vec<usize> =
                    scope.iter().enumerate().filter(|(_, l)| l.item && l.indent == indent).map(|(i, _)| i).collect();
                let start = *starts.get(n)?;
                let end = starts.get(n + 1).copied().unwrap_or(scope.len());
                found = Some(scope[start].no);
                scope = &scope[start..end];
                item_scope = true;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathPart::{Index as I, Key as K};

    const TEXT: &str = "\
# comment
interfaces: [eth0, eth1]
frontends:
  - name: play
    address: 198.18.0.1:7777
shards:
- name: a
  address: 198.18.1.2
  capacity: 100
-   name: b
    address: 198.18.1.3

    capacity: 0
";

    #[test]
    fn finds_nested_fields() {
        assert_eq!(locate(TEXT, &[K("interfaces"), I(1)]), Some(2));
        assert_eq!(locate(TEXT, &[K("frontends"), I(0), K("address")]), Some(5));
        assert_eq!(locate(TEXT, &[K("shards"), I(0), K("name")]), Some(7));
        assert_eq!(locate(TEXT, &[K("shards"), I(1), K("capacity")]), Some(13));
        assert_eq!(locate(TEXT, &[K("shards"), I(1)]), Some(10));
    }

    #[test]
    fn missing_fields_have_no_line() {
        assert_eq!(locate(TEXT, &[K("shards"), I(5), K("name")]), None);
        assert_eq!(locate(TEXT, &[K("nothing")]), None);
    }
}

/// One step of a field path.
#[derive(Debug, Clone, Copy)]
pub enum PathPart<'a> {
    Key(&'a str),
    Index(usize),
}

pub fn render_path(path: &[PathPart<'_>]) -> String {
    let mut out = String::new();
    for part in path {
        match part {
            PathPart::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathPart::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}
