//! `meta.k8s.io/v1` Tables (`Accept: ...;as=Table`), so `kubectl get` prints real columns.
//! Pods and Services have hand-written cells (as kube-apiserver's printers); every other kind
//! gets NAME, its table columns from the registry, and AGE.

use crate::registry::{Behavior, ResourceDef};
use crate::util::{human_age, lookup, meta_str, now_secs, parse_rfc3339, value_string};
use serde_json::{json, Map, Value};

struct Col {
    name: &'static str,
    format: &'static str,
    priority: u8,
}

fn columns(def: &ResourceDef) -> Vec<Col> {
    let c = |name, priority| Col {
        name,
        format: "",
        priority,
    };
    let name = Col {
        name: "Name",
        format: "name",
        priority: 0,
    };
    match def.behavior {
        Behavior::Pod => vec![
            name,
            c("Ready", 0),
            c("Status", 0),
            c("Restarts", 0),
            c("Age", 0),
            c("IP", 1),
            c("Node", 1),
            c("Nominated Node", 1),
            c("Readiness Gates", 1),
        ],
        Behavior::Service => vec![
            name,
            c("Type", 0),
            c("Cluster-IP", 0),
            c("External-IP", 0),
            c("Port(s)", 0),
            c("Age", 0),
            c("Selector", 1),
        ],
        _ => {
            let mut v = vec![name];
            v.extend(
                def.columns
                    .iter()
                    .filter(|x| x.priority == 0)
                    .map(|x| c(x.name, 0)),
            );
            v.push(c("Age", 0));
            v.extend(
                def.columns
                    .iter()
                    .filter(|x| x.priority > 0)
                    .map(|x| c(x.name, x.priority)),
            );
            v
        }
    }
}

pub fn column_definitions(def: &ResourceDef) -> Value {
    Value::Array(
        columns(def)
            .into_iter()
            .map(|c| {
                json!({"name": c.name, "type": "string", "format": c.format,
                       "description": "", "priority": c.priority})
            })
            .collect(),
    )
}

fn age(obj: &Value) -> String {
    meta_str(obj, "creationTimestamp")
        .and_then(parse_rfc3339)
        .map(|t| human_age(now_secs() - t))
        .unwrap_or_else(|| "<unknown>".into())
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn pod_cells(p: &Value) -> Vec<Value> {
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    let ready = statuses.map_or(0, |s| {
        s.iter()
            .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
            .count()
    });
    let restarts: i64 = statuses.map_or(0, |s| {
        s.iter()
            .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
            .sum()
    });
    let mut status = value_string(
        p.pointer("/status/reason")
            .or_else(|| p.pointer("/status/phase")),
    );
    if let Some(waiting) = statuses.and_then(|s| {
        s.iter()
            .find_map(|c| c.pointer("/state/waiting/reason").and_then(Value::as_str))
    }) {
        status = waiting.to_string();
    }
    if meta_str(p, "deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(meta_str(p, "name").unwrap_or("")),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(p)),
        json!(or_none(value_string(p.pointer("/status/podIP")))),
        json!(or_none(value_string(p.pointer("/spec/nodeName")))),
        json!(or_none(value_string(
            p.pointer("/status/nominatedNodeName")
        ))),
        json!("<none>"),
    ]
}

fn service_cells(s: &Value) -> Vec<Value> {
    let ports: Vec<String> = s
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let port = value_string(p.get("port"));
                    let proto = value_string(p.get("protocol"));
                    match p.get("nodePort") {
                        Some(np) => format!("{port}:{}/{proto}", value_string(Some(np))),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let selector: Vec<String> = s
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", value_string(Some(v))))
                .collect()
        })
        .unwrap_or_default();
    let external = s
        .pointer("/status/loadBalancer/ingress/0/ip")
        .map(|v| value_string(Some(v)))
        .unwrap_or_default();
    vec![
        json!(meta_str(s, "name").unwrap_or("")),
        json!(value_string(s.pointer("/spec/type"))),
        json!(or_none(value_string(s.pointer("/spec/clusterIP")))),
        json!(or_none(external)),
        json!(or_none(ports.join(","))),
        json!(age(s)),
        json!(or_none(selector.join(","))),
    ]
}

fn generic_cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let cell = |path: &str| json!(or_none(value_string(lookup(o, path))));
    let mut v = vec![json!(meta_str(o, "name").unwrap_or(""))];
    v.extend(
        def.columns
            .iter()
            .filter(|c| c.priority == 0)
            .map(|c| cell(c.path)),
    );
    v.push(json!(age(o)));
    v.extend(
        def.columns
            .iter()
            .filter(|c| c.priority > 0)
            .map(|c| cell(c.path)),
    );
    v
}

pub fn row(def: &ResourceDef, obj: &Value) -> Value {
    let cells = match def.behavior {
        Behavior::Pod => pod_cells(obj),
        Behavior::Service => service_cells(obj),
        _ => generic_cells(def, obj),
    };
    let mut meta = obj
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    meta.remove("managedFields");
    json!({"cells": cells, "object": {"kind": "PartialObjectMetadata",
                                      "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
}

/// A Table of `objs`; `with_columns` false for watch events after the first.
pub fn table<'a>(
    def: &ResourceDef,
    objs: impl Iterator<Item = &'a Value>,
    list_meta: Map<String, Value>,
    with_columns: bool,
) -> Value {
    let rows: Vec<Value> = objs.map(|o| row(def, o)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if with_columns { column_definitions(def) } else { json!([]) },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn pod_row_has_wide_cells() {
        let r = Registry::new(&[]);
        let def = r.get(r.find("", "v1", "pods").unwrap_or(0));
        let pod = json!({"metadata": {"name": "web-0", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "node-a"},
            "status": {"phase": "Running", "podIP": "10.244.1.10",
                       "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let row = row(def, &pod);
        let cells: Vec<String> = row["cells"]
            .as_array()
            .map(|a| a.iter().map(|c| value_string(Some(c))).collect())
            .unwrap_or_default();
        assert_eq!(cells[..4], ["web-0", "1/1", "Running", "2"]);
        assert_eq!(cells[5..], ["10.244.1.10", "node-a", "<none>", "<none>"]);
        assert_eq!(column_definitions(def).as_array().map(Vec::len), Some(9));
    }
}
