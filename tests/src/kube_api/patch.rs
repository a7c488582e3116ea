//! The two patch formats every resource takes: JSON merge patch (RFC 7386,
//! `application/merge-patch+json`: objects merge, `null` deletes, anything
//! else replaces) and JSON patch (RFC 6902, `application/json-patch+json`:
//! a list of add/remove/replace/move/copy/test operations).

use serde_json::{Map, Value};

/// RFC 7386: applies `patch` to `target` in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else { unreachable!("made an object above") };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902: applies every operation of `ops`, or none of them (the target
/// is left as it was when one fails).
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("a JSON patch must be a list of operations")?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        apply_op(&mut doc, op).map_err(|e| format!("operation {i} ({op}): {e}"))?;
    }
    *target = doc;
    Ok(())
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let name = op.get("op").and_then(Value::as_str).ok_or("missing \"op\"")?;
    let path = pointer(op, "path")?;
    let value = || op.get("value").cloned().ok_or_else(|| "missing \"value\"".to_string());
    match name {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            remove(doc, &path)?;
            add(doc, &path, value()?)
        }
        "move" => {
            let from = pointer(op, "from")?;
            if path.len() > from.len() && path[..from.len()] == from[..] {
                return Err("cannot move a value into one of its children".into());
            }
            let moved = remove(doc, &from)?;
            add(doc, &path, moved)
        }
        "copy" => {
            let copied = get(doc, &pointer(op, "from")?)?.clone();
            add(doc, &path, copied)
        }
        "test" => {
            if *get(doc, &path)? == value()? {
                Ok(())
            } else {
                Err("test failed".into())
            }
        }
        other => Err(format!("unknown operation {other:?}")),
    }
}

/// The reference tokens of the JSON pointer in `op[field]`.
fn pointer(op: &Value, field: &str) -> Result<Vec<String>, String> {
    let text = op.get(field).and_then(Value::as_str).ok_or_else(|| format!("missing \"{field}\""))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let rest = text.strip_prefix('/').ok_or_else(|| format!("{text:?} is not a JSON pointer"))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn get<'a>(doc: &'a Value, path: &[String]) -> Result<&'a Value, String> {
    path.iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get(token).ok_or_else(|| format!("no member {token:?}")),
        Value::Array(a) => {
            token.parse::<usize>().ok().and_then(|i| a.get(i)).ok_or_else(|| format!("no index {token:?}"))
        }
        _ => Err(format!("cannot index a scalar with {token:?}")),
    })
}

fn parent<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    path[..path.len() - 1].iter().try_fold(doc, |v, token| match v {
        Value::Object(m) => m.get_mut(token).ok_or_else(|| format!("no member {token:?}")),
        Value::Array(a) => {
            token.parse::<usize>().ok().and_then(|i| a.get_mut(i)).ok_or_else(|| format!("no index {token:?}"))
        }
        _ => Err(format!("cannot index a scalar with {token:?}")),
    })
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some(last) = path.last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i =
                if last == "-" { a.len() } else { last.parse::<usize>().map_err(|_| format!("bad index {last:?}"))? };
            if i > a.len() {
                return Err(format!("index {i} is past the end of the list"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err("cannot add to a scalar".into()),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let last = path.last().ok_or("cannot remove the whole document")?;
    match parent(doc, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("no member {last:?}")),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(format!("no index {last:?}")),
        },
        _ => Err("cannot remove from a scalar".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_merges_replaces_and_deletes() {
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        merge_patch(&mut doc, &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}}));
        assert_eq!(doc, json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}}));
    }

    #[test]
    fn json_patch_operations() {
        let mut doc = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 2]});
        let ops = json!([
            {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
            {"op": "add", "path": "/metadata/labels/c", "value": "3"},
            {"op": "remove", "path": "/metadata/labels/a~1b"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "replace", "path": "/list/0", "value": 0},
            {"op": "copy", "from": "/list/1", "path": "/copied"},
            {"op": "move", "from": "/copied", "path": "/moved"},
        ]);
        json_patch(&mut doc, &ops).unwrap();
        assert_eq!(doc, json!({"metadata": {"labels": {"c": "3"}}, "list": [0, 2, 3], "moved": 2}));
        let before = doc.clone();
        let failing = json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/x", "value": 2}]);
        assert!(json_patch(&mut doc, &failing).is_err());
        assert_eq!(doc, before, "a failed patch changes nothing");
    }
}
