//! The three patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! Kubernetes strategic merge patch.
//!
//! Strategic merge patch here is table-driven: a list is merged by key when its field name
//! has an entry in [`merge_key`]; other lists are replaced, like merge patch. Directives
//! supported: `$patch: delete` / `$patch: replace` (in maps and list items),
//! `$deleteFromPrimitiveList/<field>`, `$retainKeys` (keeps only the named keys), and
//! `$setElementOrder/<field>` (accepted and ignored: we keep the original order and append).

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| format!("path {p:?} not found"))?,
            Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| format!("bad array index {p:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("array index {i} out of range"))?
            }
            _ => return Err(format!("cannot traverse into a scalar at {p:?}")),
        };
    }
    Ok(cur)
}

fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, init)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, init)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("bad array index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("array index {i} out of range"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("cannot add at {path:?}: parent is a scalar")),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, init) = parts
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_string())?;
    match parent_mut(doc, init)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path {path:?} not found")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove {path:?}: parent is a scalar")),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or_else(|| "a JSON patch must be an array of operations".to_string())?;
    for op in ops {
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| "operation without \"op\"".to_string())?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{name} operation without \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("{name} operation without \"value\""))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{name} operation without \"from\""))
        };
        match name {
            "add" => add_at(doc, path, value()?)?,
            "remove" => {
                remove_at(doc, path)?;
            }
            "replace" => {
                remove_at(doc, path)?;
                add_at(doc, path, value()?)?;
            }
            "move" => {
                let v = remove_at(doc, from()?)?;
                add_at(doc, path, v)?;
            }
            "copy" => {
                let v = doc
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| format!("path {:?} not found", from().unwrap_or("")))?;
                add_at(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("test operation failed at {path:?}"));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    Ok(())
}

/// The merge key of a list field, after Kubernetes' `patchMergeKey` tags. `items` lets the
/// ambiguous `ports` choose between container ports and service ports.
pub fn merge_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "volumeDevices"
        | "volumesAttached" => "name",
        "volumeMounts" => "mountPath",
        "conditions" | "addresses" => "type",
        "taints" => "key",
        "ownerReferences" => "uid",
        "hostAliases" | "podIPs" | "hostIPs" => "ip",
        "readinessGates" => "conditionType",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars merged as sets (`patchStrategy:"merge"` on a primitive list).
fn is_primitive_merge_list(field: &str) -> bool {
    matches!(field, "finalizers" | "podCIDRs")
}

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut v = patch.clone();
            if let Value::Object(m) = &mut v {
                m.remove("$patch");
            }
            *target = v;
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some(other) => return Err(format!("unknown $patch directive {other:?}")),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(());
    };
    if let Some(retain) = p.get("$retainKeys") {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| "$retainKeys must be a list".to_string())?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Some(del)) = (t.get_mut(field), v.as_array()) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown strategic merge patch directive {k:?}"));
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Object(_) => {
                strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v)?;
            }
            Value::Array(items) => {
                let cur = t.entry(k.clone()).or_insert(Value::Null);
                merge_list(k, cur, items)?;
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(field: &str, cur: &mut Value, items: &[Value]) -> Result<(), String> {
    // `[{"$patch": "replace"}, ...]` replaces the whole list.
    let replace = items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace || !cur.is_array() {
        let kept: Vec<Value> = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        *cur = Value::Array(kept);
        return Ok(());
    }
    let Value::Array(list) = cur else {
        return Ok(());
    };
    if is_primitive_merge_list(field) {
        for i in items {
            if !list.contains(i) {
                list.push(i.clone());
            }
        }
        return Ok(());
    }
    let all: Vec<&Value> = list.iter().chain(items.iter()).collect();
    let Some(key) = merge_key(field, &all) else {
        *list = items.to_vec();
        return Ok(());
    };
    for item in items {
        let id = item
            .get(key)
            .ok_or_else(|| format!("list {field:?} item lacks its merge key {key:?}"))?;
        let pos = list.iter().position(|x| x.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut list[i], item)?,
            (None, false) => {
                let mut fresh = Value::Object(Map::new());
                strategic_merge(&mut fresh, item)?;
                list.push(fresh);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"l": [1, 2]});
        merge_patch(&mut t, &json!({"l": [3]}));
        assert_eq!(t, json!({"l": [3]}));
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"metadata": {"labels": {"a": "1"}}, "l": [1, 2]});
        let r = json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "add", "path": "/l/-", "value": 3},
                {"op": "replace", "path": "/l/0", "value": 0},
                {"op": "test", "path": "/l/2", "value": 3},
                {"op": "copy", "from": "/l", "path": "/m"},
                {"op": "move", "from": "/m", "path": "/n"}
            ]),
        );
        assert_eq!(r, Ok(()));
        assert_eq!(
            d,
            json!({"metadata": {"labels": {"b/c": "2"}}, "l": [0, 2, 3], "n": [0, 2, 3]})
        );
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/l/0", "value": 9}])).is_err());
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&mut d, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merge_by_keys() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}],
             "env": [{"name": "E1", "value": "1"}]},
            {"name": "b", "image": "y"}]},
            "metadata": {"finalizers": ["f1"]}});
        let patch = json!({
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "metadata": {"finalizers": ["f2"]},
            "spec": {"containers": [
                {"name": "a", "image": "x2", "ports": [{"containerPort": 81}],
                 "env": [{"name": "E2", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "z"}]}});
        assert_eq!(strategic_merge(&mut pod, &patch), Ok(()));
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x2",
                 "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}],
                 "env": [{"name": "E1", "value": "1"}, {"name": "E2", "value": "2"}]},
                {"name": "c", "image": "z"}]},
                "metadata": {"finalizers": ["f1", "f2"]}})
        );
    }

    #[test]
    fn strategic_merge_service_ports_and_directives() {
        let mut svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}],
                                      "selector": {"app": "a", "tier": "x"}}});
        let patch = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}],
                                    "selector": {"$patch": "replace", "app": "b"}}});
        assert_eq!(strategic_merge(&mut svc, &patch), Ok(()));
        assert_eq!(
            svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}],
                             "selector": {"app": "b"}}})
        );
        let mut o = json!({"spec": {"a": 1, "b": 2}, "metadata": {"finalizers": ["x", "y"]}});
        let p = json!({"spec": {"$retainKeys": ["a", "c"], "c": 3},
                       "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}});
        assert_eq!(strategic_merge(&mut o, &p), Ok(()));
        assert_eq!(
            o,
            json!({"spec": {"a": 1, "c": 3}, "metadata": {"finalizers": ["y"]}})
        );
        // Lists without a merge key are replaced.
        let mut o = json!({"spec": {"ingress": [{"a": 1}]}});
        assert_eq!(
            strategic_merge(&mut o, &json!({"spec": {"ingress": [{"b": 2}]}})),
            Ok(())
        );
        assert_eq!(o, json!({"spec": {"ingress": [{"b": 2}]}}));
        assert!(strategic_merge(&mut o, &json!({"$bogus": 1})).is_err());
    }
}
