//! Legacy discovery (`/api`, `/apis`, per group-version resource lists), `/version`, and the
//! minimal OpenAPI v3 that lets `kubectl create -f`/`apply -f` validate (it then trusts the
//! server: `fieldValidation=Strict`).

use crate::registry::{Behavior, Registry, ResourceDef};
use serde_json::{json, Value};

pub fn version() -> Value {
    // minor 32: kubectl-dispatcher picks its kubectl from the server's minor (see kube-api README).
    json!({
        "major": "1",
        "minor": "32",
        "emulationMajor": "1",
        "emulationMinor": "32",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "31",
        "gitVersion": "v1.32.0-ovnk-lab",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}]
    })
}

fn group_json(reg: &Registry, group: &str) -> Option<Value> {
    let versions: Vec<Value> = reg
        .group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({"name": group, "versions": versions, "preferredVersion": preferred}))
}

pub fn api_group_list(reg: &Registry) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in reg.group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let groups: Vec<Value> = groups.iter().filter_map(|g| group_json(reg, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    let mut g = group_json(reg, group)?;
    if let Some(o) = g.as_object_mut() {
        o.insert("kind".into(), json!("APIGroup"));
        o.insert("apiVersion".into(), json!("v1"));
    }
    Some(g)
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_entries(d: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": d.plural,
        "singularName": d.singular,
        "namespaced": d.namespaced,
        "kind": d.kind,
        "verbs": ALL_VERBS,
    });
    if !d.short_names.is_empty() {
        main["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        main["categories"] = json!(d.categories);
    }
    let mut out = vec![main];
    if d.status_subresource {
        out.push(
            json!({"name": format!("{}/status", d.plural), "singularName": "",
                        "namespaced": d.namespaced, "kind": d.kind,
                        "verbs": ["get", "patch", "update"]}),
        );
    }
    match d.behavior {
        Behavior::Pod => out.push(json!({"name": "pods/binding", "singularName": "",
                                         "namespaced": true, "kind": "Binding", "verbs": ["create"]})),
        Behavior::Namespace => out.push(json!({"name": "namespaces/finalize", "singularName": "",
                                               "namespaced": false, "kind": "Namespace", "verbs": ["update"]})),
        _ => {}
    }
    out
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = reg
        .defs()
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = defs.iter().flat_map(|d| resource_entries(d)).collect();
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn openapi_root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, v) in reg.group_versions() {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}")}),
        );
    }
    json!({"paths": paths})
}

/// One group-version's document: a `patch` operation per item path declaring the GVK and the
/// `fieldValidation` parameter — what kubectl needs to send objects for server validation.
pub fn openapi_gv(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for d in reg
        .defs()
        .iter()
        .filter(|d| d.group == group && d.version == version)
    {
        let base = gv_path(group, version);
        let item = if d.namespaced {
            format!("/{base}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("/{base}/{}/{{name}}", d.plural)
        };
        paths.insert(
            item,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": d.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}}
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

/// The `Content-Type` of an aggregated discovery answer; kubectl rejects the same body labelled
/// plain `application/json`.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|a| {
        let a = a.replace(' ', "");
        a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2") && !a.contains("v=v2beta1")
    })
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`): the core group for `/api`, the named
/// groups for `/apis`, every resource of every version in one answer.
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in reg.group_versions() {
        if g.is_empty() == core && !groups.contains(&g) {
            groups.push(g);
        }
    }
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            let versions: Vec<Value> = reg
                .group_versions()
                .into_iter()
                .filter(|(gg, _)| gg == g)
                .map(|(_, v)| {
                    let resources: Vec<Value> = reg
                        .defs()
                        .iter()
                        .filter(|d| d.group == *g && d.version == v)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if g.is_empty() {
                json!({})
            } else {
                json!({"name": g})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
           "metadata": {}, "items": items})
}

fn aggregated_resource(d: &ResourceDef) -> Value {
    let kind = |k: &str| json!({"group": "", "version": "", "kind": k});
    let mut r = json!({
        "resource": d.plural,
        "responseKind": kind(d.kind),
        "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": d.singular,
        "verbs": ALL_VERBS,
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    let mut subs = Vec::new();
    if d.status_subresource {
        subs.push(
            json!({"subresource": "status", "responseKind": kind(d.kind),
                         "verbs": ["get", "patch", "update"]}),
        );
    }
    match d.behavior {
        Behavior::Pod => subs.push(
            json!({"subresource": "binding", "responseKind": kind("Binding"), "verbs": ["create"]}),
        ),
        Behavior::Namespace => subs.push(
            json!({"subresource": "finalize", "responseKind": kind("Namespace"), "verbs": ["update"]}),
        ),
        _ => {}
    }
    if !subs.is_empty() {
        r["subresources"] = Value::Array(subs);
    }
    r
}
