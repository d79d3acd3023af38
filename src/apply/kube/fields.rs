//! Field paths in Kubernetes objects, shared by the diff and the fake API
//! server: lists of objects that all carry a unique `name` are keyed by it
//! (as server-side apply merges containers, env, ports and volumes); any
//! other list is one value.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One step of a path: an object field, or the item of a keyed list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Field(String),
    Key(String),
}

pub type Path = Vec<Seg>;

/// `spec.template.spec.containers[name=web].image`.
pub fn show(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Field(f) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(f);
            }
            Seg::Key(k) => {
                s.push_str("[name=");
                s.push_str(k);
                s.push(']');
            }
        }
    }
    s
}

/// The names of a list whose items are all objects with a unique string
/// `name`: such a list merges item by item.
pub fn keyed(items: &[Value]) -> Option<Vec<&str>> {
    let mut names = Vec::with_capacity(items.len());
    for i in items {
        names.push(i.get("name")?.as_str()?);
    }
    let unique: BTreeSet<&&str> = names.iter().collect();
    (!items.is_empty() && unique.len() == names.len()).then_some(names)
}

/// Every leaf path of `v` (scalars, atomic lists, empty objects).
pub fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(Seg::Field(k.clone()));
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => match keyed(items) {
            Some(names) => {
                for (item, name) in items.iter().zip(names) {
                    prefix.push(Seg::Key(name.to_string()));
                    leaves(item, prefix, out);
                    prefix.pop();
                }
            }
            None => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at `path`, if any.
pub fn get<'v>(v: &'v Value, path: &[Seg]) -> Option<&'v Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Seg::Field(f) => cur.get(f)?,
            Seg::Key(k) => cur
                .as_array()?
                .iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some(k))?,
        };
    }
    Some(cur)
}

/// Set the value at `path`, creating objects and keyed items on the way.
pub fn set(v: &mut Value, path: &[Seg], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *v = value;
        return;
    };
    match first {
        Seg::Field(f) => {
            if !v.is_object() {
                *v = Value::Object(Map::new());
            }
            let m = v.as_object_mut().expect("object");
            let child = m.entry(f.clone()).or_insert(Value::Null);
            set(child, rest, value);
        }
        Seg::Key(k) => {
            if !v.is_array() {
                *v = Value::Array(Vec::new());
            }
            let items = v.as_array_mut().expect("array");
            let pos = items
                .iter()
                .position(|i| i.get("name").and_then(Value::as_str) == Some(k));
            let i = match pos {
                Some(i) => i,
                None => {
                    items.push(serde_json::json!({ "name": k }));
                    items.len() - 1
                }
            };
            set(&mut items[i], rest, value);
        }
    }
}

/// Remove the value at `path`, and objects or keyed items left empty by it.
pub fn remove(v: &mut Value, path: &[Seg]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match first {
        Seg::Field(f) => {
            let Some(m) = v.as_object_mut() else { return };
            if rest.is_empty() {
                m.remove(f);
            } else if let Some(child) = m.get_mut(f) {
                remove(child, rest);
                let empty = match child {
                    Value::Object(c) => c.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if empty {
                    m.remove(f);
                }
            }
        }
        Seg::Key(k) => {
            let Some(items) = v.as_array_mut() else {
                return;
            };
            let Some(i) = items
                .iter()
                .position(|i| i.get("name").and_then(Value::as_str) == Some(k))
            else {
                return;
            };
            if rest.is_empty() {
                items.remove(i);
                return;
            }
            remove(&mut items[i], rest);
            // An item with nothing but its key is gone.
            if items[i].as_object().is_some_and(|o| o.len() <= 1) {
                items.remove(i);
            }
        }
    }
}

/// One changed leaf between two versions of an object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The field manager that set the live value, when it is not stackc's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip)]
    pub segs: Path,
}

/// Every leaf that differs between `before` and `after`.
pub fn changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(Some(before), Some(after), &mut Vec::new(), &mut out);
    out
}

fn walk(a: Option<&Value>, b: Option<&Value>, path: &mut Path, out: &mut Vec<FieldChange>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                path.push(Seg::Field(k.clone()));
                walk(x.get(k), y.get(k), path, out);
                path.pop();
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y)))
            if keyed(x).is_some() && keyed(y).is_some() =>
        {
            let names: BTreeSet<&str> = keyed(x)
                .into_iter()
                .flatten()
                .chain(keyed(y).into_iter().flatten())
                .collect();
            let find = |l: &'_ [Value], n: &str| {
                l.iter()
                    .find(|i| i.get("name").and_then(Value::as_str) == Some(n))
                    .cloned()
            };
            for n in names {
                path.push(Seg::Key(n.to_string()));
                walk(find(x, n).as_ref(), find(y, n).as_ref(), path, out);
                path.pop();
            }
        }
        _ => out.push(FieldChange {
            path: show(path),
            before: a.cloned(),
            after: b.cloned(),
            owner: None,
            segs: path.clone(),
        }),
    }
}

/// A `managedFields[].fieldsV1` tree as the set of paths it lists.
pub fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn go(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() || m.contains_key(".") {
            out.insert(prefix.clone());
        }
        for (k, child) in m {
            let seg = if let Some(f) = k.strip_prefix("f:") {
                Seg::Field(f.to_string())
            } else if let Some(key) = k.strip_prefix("k:") {
                let name = serde_json::from_str::<Value>(key)
                    .ok()
                    .and_then(|j| {
                        let o = j.as_object()?;
                        if o.len() == 1 {
                            o.get("name")?.as_str().map(str::to_string)
                        } else {
                            None
                        }
                    })
                    .unwrap_or_else(|| key.to_string());
                Seg::Key(name)
            } else {
                continue;
            };
            prefix.push(seg);
            go(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    go(v, &mut Vec::new(), &mut out);
    out
}

/// A set of paths as a `fieldsV1` tree.
pub fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Value::Object(Map::new());
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            let k = match seg {
                Seg::Field(f) => format!("f:{f}"),
                Seg::Key(n) => format!("k:{}", serde_json::json!({ "name": n })),
            };
            cur = cur
                .as_object_mut()
                .expect("object")
                .entry(k)
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyed_lists_diff_by_name() {
        let a = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}});
        let b = json!({"spec": {"containers": [{"name": "b", "image": "y:1"}, {"name": "a", "image": "x:2"}]}});
        let c = changes(&a, &b);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "spec.containers[name=a].image");
    }

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "a"}]}}}});
        let mut set = BTreeSet::new();
        leaves(&v, &mut Vec::new(), &mut set);
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }

    #[test]
    fn set_get_remove() {
        let mut v = json!({});
        let p = vec![
            Seg::Field("spec".into()),
            Seg::Field("containers".into()),
            Seg::Key("web".into()),
            Seg::Field("image".into()),
        ];
        set(&mut v, &p, json!("a:1"));
        assert_eq!(get(&v, &p), Some(&json!("a:1")));
        remove(&mut v, &p);
        assert_eq!(v, json!({}));
    }
}
