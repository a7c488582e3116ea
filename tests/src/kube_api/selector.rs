//! Label selectors (`app=samp,tier!=web`, `env in (a,b)`, `!gone`) and the
//! two field selectors every resource supports (`metadata.name`,
//! `metadata.namespace`), as list and watch requests send them, and the
//! `matchLabels` / `matchExpressions` form of an allocation's selectors.

use serde_json::Value;

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            // As in Kubernetes: an object without the label matches `!=`.
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        }
    }
}

/// All of its requirements must hold; an empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The `labelSelector` query parameter.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term).map_err(|e| format!("unable to parse requirement: {e}"))?);
        }
        Ok(LabelSelector { requirements })
    }

    /// A `metav1.LabelSelector` object: `{matchLabels, matchExpressions}`.
    pub fn from_object(selector: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").filter(|v| !v.is_null()) {
            let labels = labels.as_object().ok_or("matchLabels must be an object")?;
            for (k, v) in labels {
                let v = v.as_str().ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
                requirements.push(Requirement::Equals(k.clone(), v.to_string()));
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").filter(|v| !v.is_null()) {
            for e in exprs.as_array().ok_or("matchExpressions must be a list")? {
                let key = e.get("key").and_then(Value::as_str).ok_or("matchExpressions[].key is required")?;
                let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                let key = key.to_string();
                requirements.push(match op {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => return Err(format!("{other:?} is not a valid label selector operator")),
                });
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether an object (its `metadata.labels`) is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// Splits at commas outside parentheses (`a in (x,y),b=c` is two terms).
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key_of(key)?));
    }
    if let Some(open) = term.find('(') {
        let close = term.rfind(')').filter(|&c| c > open).ok_or_else(|| format!("{term:?}: missing ')'"))?;
        let mut head = term[..open].split_whitespace();
        let (key, op) = (head.next().unwrap_or(""), head.next().unwrap_or(""));
        let values = term[open + 1..close].split(',').map(|v| value_of(v.trim())).collect::<Result<Vec<_>, _>>()?;
        return match op {
            "in" => Ok(Requirement::In(key_of(key)?, values)),
            "notin" => Ok(Requirement::NotIn(key_of(key)?, values)),
            _ => Err(format!("{term:?}: expected 'in' or 'notin' before '('")),
        };
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key_of(k)?, value_of(v.trim())?));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key_of(k)?, value_of(v.trim())?));
    }
    Ok(Requirement::Exists(key_of(term)?))
}

fn key_of(k: &str) -> Result<String, String> {
    let k = k.trim();
    let ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!("{k:?} is not a valid label key"))
    }
}

fn value_of(v: &str) -> Result<String, String> {
    if v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?} is not a valid label value"))
    }
}

/// A `fieldSelector`: only `metadata.name` and `metadata.namespace`, the
/// fields every resource (custom ones included) can be selected by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, value, equal?)
    terms: Vec<(String, String, bool)>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{text}'; can't understand '{term}'"));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), value.trim().to_string(), equal));
        }
        Ok(FieldSelector { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, value, equal)| {
            let actual = match field.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str(),
                _ => object["metadata"]["namespace"].as_str(),
            };
            (actual == Some(value.as_str())) == *equal
        })
    }
}

/// The label and field selectors of one list or watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "gs-1", "namespace": "games", "labels": labels}})
    }

    #[test]
    fn equality_inequality_and_sets() {
        let o = obj(json!({"app": "samp", "tier": "shard"}));
        let yes = ["app=samp", "app==samp,tier=shard", "tier!=web", "missing!=x", "app in (samp, omp)", "!gone", "app"];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&o), "{s} should match");
        }
        let no = ["app=omp", "app=samp,tier=web", "app!=samp", "app notin (samp)", "gone", "!app"];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&o), "{s} should not match");
        }
        assert!(LabelSelector::parse("").unwrap().matches(&obj(Value::Null)));
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn match_labels_and_expressions() {
        let o = obj(json!({"agones.dev/fleet": "pool", "zone": "a"}));
        let s = json!({"matchLabels": {"agones.dev/fleet": "pool"},
                       "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]});
        assert!(LabelSelector::from_object(&s).unwrap().matches(&o));
        let s = json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]});
        assert!(!LabelSelector::from_object(&s).unwrap().matches(&o));
    }

    #[test]
    fn field_selectors_by_name_and_namespace() {
        let o = obj(Value::Null);
        assert!(FieldSelector::parse("metadata.name=gs-1").unwrap().matches(&o));
        assert!(FieldSelector::parse("metadata.namespace!=other").unwrap().matches(&o));
        assert!(!FieldSelector::parse("metadata.name==gs-2").unwrap().matches(&o));
        assert!(FieldSelector::parse("status.state=Ready").is_err());
    }
}
