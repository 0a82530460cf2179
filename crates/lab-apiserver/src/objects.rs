//! Object lifecycle: server-filled fields, per-kind defaults and validation, and the
//! create / update / delete rules, all run inside one storage transaction.

use crate::error::{ApiError, ApiResult, Cause};
use crate::registry::{Behavior, Registry, ResourceDef};
use crate::services::{self, ServiceNet};
use crate::store::{scan, Txn};
use crate::util::{
    is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, meta_str, now_rfc3339, random_suffix,
};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
    /// `namespaces/<name>/finalize`: only `spec.finalizers` changes.
    Finalize,
}

/// Namespaces that always exist and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What the lifecycle code needs besides the transaction.
pub struct Ctx<'a> {
    pub reg: &'a Registry,
    pub net: &'a ServiceNet,
    /// Compute and validate, but store nothing.
    pub dry_run: bool,
}

/// Decodes a request body: JSON, or YAML for `*yaml` content types.
pub fn decode_body(body: &[u8], content_type: &str, what: &str) -> ApiResult<Value> {
    if content_type.contains("protobuf") {
        return crate::proto::decode(body);
    }
    if content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let v: Value = if content_type.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request(format!("{what}: body is not UTF-8")))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("{what}: invalid YAML: {e}")))?
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "{what}: couldn't get version/kind; json parse error: {e}"
            ))
        })?
    };
    Ok(v)
}

fn check_type(def: &ResourceDef, obj: &Value) -> ApiResult<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): not a JSON object",
            def.kind
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != def.kind {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): kind {k:?}",
                def.kind
            )));
        }
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        if av != def.api_version() {
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: apiVersion {av:?} is not served here",
                def.kind,
                def.api_version(),
                def.kind
            )));
        }
    }
    match obj.get("metadata") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: metadata must be an object",
            def.kind,
            def.api_version(),
            def.kind
        ))),
    }
}

fn ensure_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("set to an object just above"),
    }
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let o = ensure_object(obj);
    ensure_object(o.entry("metadata").or_insert(Value::Null))
}

/// Sets `obj.a.b.c = val`, turning non-objects on the way into objects (never panics).
pub fn set_field(obj: &mut Value, path: &[&str], val: Value) {
    let Some((last, init)) = path.split_last() else {
        *obj = val;
        return;
    };
    let mut cur = obj;
    for k in init {
        cur = ensure_object(cur)
            .entry(k.to_string())
            .or_insert(Value::Null);
    }
    ensure_object(cur).insert(last.to_string(), val);
}

fn validate_name(def: &ResourceDef, name: &str) -> ApiResult<()> {
    let (ok, rule) = match def.behavior {
        Behavior::Namespace => (is_dns1123_label(name), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
        Behavior::Service => (is_dns1035_label(name), "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"),
        _ => (is_dns1123_subdomain(name), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            def.kind,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {}: {rule}", json!(name)),
                field: "metadata.name".into(),
            }],
        ))
    }
}

/// Checks that `ns` exists and accepts new objects.
fn check_namespace(txn: &Txn, ctx: &Ctx, def: &ResourceDef, ns: &str, name: &str) -> ApiResult<()> {
    let Some(ns_res) = ctx.reg.index_of(Behavior::Namespace) else {
        return Ok(());
    };
    match txn.get(ns_res, "", ns) {
        None => Err(ApiError::not_found("namespaces", ns)),
        Some(n) if meta_str(&n, "deletionTimestamp").is_some() => {
            Err(ApiError::terminating(def.plural, name, ns))
        }
        Some(_) => Ok(()),
    }
}

fn validate_pod(name: &str, pod: &mut Value) -> ApiResult<()> {
    let containers = pod
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return Err(ApiError::required("Pod", name, "spec.containers"));
    };
    let mut causes = Vec::new();
    for (i, c) in containers.iter_mut().enumerate() {
        let Some(c) = c.as_object_mut() else {
            causes.push(Cause {
                reason: "FieldValueInvalid",
                message: "must be an object".into(),
                field: format!("spec.containers[{i}]"),
            });
            continue;
        };
        if c.get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: format!("spec.containers[{i}].name"),
            });
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: format!("spec.containers[{i}].image"),
            });
        }
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let latest = !image.contains(':') || image.ends_with(":latest");
        c.entry("imagePullPolicy")
            .or_insert(json!(if latest { "Always" } else { "IfNotPresent" }));
        c.entry("terminationMessagePath")
            .or_insert(json!("/dev/termination-log"));
        c.entry("terminationMessagePolicy").or_insert(json!("File"));
        c.entry("resources").or_insert(json!({}));
        if let Some(Value::Array(ports)) = c.get_mut("ports") {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                p.entry("protocol").or_insert(json!("TCP"));
            }
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("Pod", name, causes));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("restartPolicy").or_insert(json!("Always"));
        spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        spec.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        spec.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        spec.entry("securityContext").or_insert(json!({}));
        spec.entry("enableServiceLinks").or_insert(json!(true));
        spec.entry("preemptionPolicy")
            .or_insert(json!("PreemptLowerPriority"));
        spec.entry("priority").or_insert(json!(0));
    }
    Ok(())
}

/// Creates an object posted to `url_ns` (None for cluster-scoped kinds or `-A` paths).
pub fn create(
    txn: &mut Txn,
    ctx: &Ctx,
    res: usize,
    url_ns: Option<&str>,
    mut obj: Value,
) -> ApiResult<Arc<Value>> {
    let def = *ctx.reg.get(res);
    check_type(&def, &obj)?;
    let api_version = def.api_version();
    if let Some(o) = obj.as_object_mut() {
        o.insert("kind".into(), json!(def.kind));
        o.insert("apiVersion".into(), json!(api_version));
    }
    let meta = meta_mut(&mut obj);
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match meta.get("generateName").and_then(Value::as_str) {
            Some(g) if !g.is_empty() => format!("{g}{}", random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    def.kind,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ))
            }
        },
    };
    meta.insert("name".into(), json!(name));
    let ns = if def.namespaced {
        let body_ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .map(String::from);
        let ns = match (url_ns, body_ns) {
            (Some(u), Some(b)) if u != b => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            (Some(u), _) => u.to_string(),
            (None, Some(b)) => b,
            (None, None) => {
                return Err(ApiError::bad_request(format!(
                    "{} {name:?}: a namespace is required",
                    def.kind
                )))
            }
        };
        meta.insert("namespace".into(), json!(ns));
        ns
    } else {
        meta.remove("namespace");
        String::new()
    };
    if meta
        .get("resourceVersion")
        .is_some_and(|v| !v.is_null() && v != "")
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("managedFields");
    meta.remove("selfLink");
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if def.generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    validate_name(&def, &name)?;
    if def.namespaced {
        check_namespace(txn, ctx, &def, &ns, &name)?;
    }
    if txn.get(res, &ns, &name).is_some() {
        return Err(ApiError::already_exists(&def.qualified_plural(), &name));
    }
    match def.behavior {
        Behavior::Pod => {
            validate_pod(&name, &mut obj)?;
            set_field(
                &mut obj,
                &["status"],
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        Behavior::Service => services::prepare(ctx.net, txn.state, &name, &mut obj, None)?,
        Behavior::Namespace => {
            let meta = meta_mut(&mut obj);
            if !meta.get("labels").is_some_and(Value::is_object) {
                meta.insert("labels".into(), json!({}));
            }
            if let Some(l) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            set_field(&mut obj, &["spec"], json!({"finalizers": ["kubernetes"]}));
            set_field(&mut obj, &["status"], json!({"phase": "Active"}));
        }
        Behavior::Node => {}
        Behavior::Generic => {
            if def.status_subresource {
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    if ctx.dry_run {
        return Ok(Arc::new(obj));
    }
    Ok(txn.put(res, &ns, &name, obj))
}

/// Everything except metadata and status: a change here bumps `generation`.
fn spec_part(v: &Value) -> Map<String, Value> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn without_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

/// Replaces an object (PUT, and the result of every PATCH). Returns the stored object; a
/// no-op write returns the old one without a new resourceVersion.
pub fn update(
    txn: &mut Txn,
    ctx: &Ctx,
    res: usize,
    ns: &str,
    name: &str,
    mut new: Value,
    sub: Sub,
) -> ApiResult<Arc<Value>> {
    let def = *ctx.reg.get(res);
    check_type(&def, &new)?;
    let old = txn
        .get(res, ns, name)
        .ok_or_else(|| ApiError::not_found(&def.qualified_plural(), name))?;
    let plural = def.qualified_plural();
    {
        let meta = meta_mut(&mut new);
        if let Some(n) = meta.get("name").and_then(Value::as_str) {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if def.namespaced {
            if let Some(n) = meta.get("namespace").and_then(Value::as_str) {
                if n != ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        match meta.get("resourceVersion") {
            Some(Value::String(rv)) if !rv.is_empty() => {
                if Some(rv.as_str()) != meta_str(&old, "resourceVersion") {
                    return Err(ApiError::conflict(&plural, name));
                }
            }
            Some(Value::String(_)) | Some(Value::Null) | None => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "metadata.resourceVersion must be a string, got {other}"
                )))
            }
        }
    }
    let mut merged = match sub {
        Sub::Main => {
            if def.status_subresource {
                match old.get("status") {
                    Some(s) => set_field(&mut new, &["status"], s.clone()),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            new
        }
        Sub::Status => {
            let mut m = (*old).clone();
            match new.get("status") {
                Some(s) => set_field(&mut m, &["status"], s.clone()),
                None => {
                    if let Some(o) = m.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            m
        }
        Sub::Finalize => {
            let mut m = (*old).clone();
            let f = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            set_field(&mut m, &["spec", "finalizers"], f);
            m
        }
    };
    if let Some(o) = merged.as_object_mut() {
        o.insert("kind".into(), json!(def.kind));
        o.insert("apiVersion".into(), json!(def.api_version()));
    }
    // Server-owned metadata is never taken from the client.
    {
        let old_meta = old.get("metadata").and_then(Value::as_object);
        let meta = meta_mut(&mut merged);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ] {
            match old_meta.and_then(|m| m.get(k)) {
                Some(v) => {
                    meta.insert(k.into(), v.clone());
                }
                None => {
                    meta.remove(k);
                }
            }
        }
        meta.insert("name".into(), json!(name));
        if def.namespaced {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.remove("managedFields");
        meta.insert(
            "resourceVersion".into(),
            old_meta
                .and_then(|m| m.get("resourceVersion"))
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    match def.behavior {
        Behavior::Service if sub == Sub::Main => {
            services::prepare(ctx.net, txn.state, name, &mut merged, Some(&old))?
        }
        Behavior::Pod if sub == Sub::Main => {
            validate_pod(name, &mut merged)?;
            let old_node = old.pointer("/spec/nodeName").and_then(Value::as_str);
            let new_node = merged.pointer("/spec/nodeName").and_then(Value::as_str);
            if old_node.is_some() && old_node != new_node {
                return Err(ApiError::invalid(
                    "Pod",
                    name,
                    vec![Cause {
                        reason: "FieldValueForbidden",
                        message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, ... (spec.nodeName is set)".into(),
                        field: "spec".into(),
                    }],
                ));
            }
        }
        Behavior::Namespace => {
            let meta = meta_mut(&mut merged);
            if !meta.get("labels").is_some_and(Value::is_object) {
                meta.insert("labels".into(), json!({}));
            }
            if let Some(l) = meta.get_mut("labels").and_then(Value::as_object_mut) {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        _ => {}
    }
    if def.generation && spec_part(&merged) != spec_part(&old) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut merged).insert("generation".into(), json!(g + 1));
    }
    if without_rv(&merged) == without_rv(&old) {
        return Ok(old);
    }
    if ctx.dry_run {
        return Ok(Arc::new(merged));
    }
    // The last finalizer removed from an object being deleted: now it goes.
    let finalizers_empty = merged
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    let ns_finalizers_empty = def.behavior != Behavior::Namespace
        || merged
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    if meta_str(&merged, "deletionTimestamp").is_some() && finalizers_empty && ns_finalizers_empty {
        txn.put(res, ns, name, merged);
        return txn
            .delete(res, ns, name)
            .ok_or_else(|| ApiError::not_found(&plural, name));
    }
    Ok(txn.put(res, ns, name, merged))
}

/// What a DELETE did.
pub enum Deleted {
    /// Removed now; the last state.
    Gone(Arc<Value>),
    /// Marked for deletion (finalizers pending, or a namespace being emptied).
    Pending(Arc<Value>),
}

/// Deletes an object, honouring `preconditions` in the DeleteOptions.
pub fn delete(
    txn: &mut Txn,
    ctx: &Ctx,
    res: usize,
    ns: &str,
    name: &str,
    opts: &Value,
) -> ApiResult<Deleted> {
    let def = *ctx.reg.get(res);
    let plural = def.qualified_plural();
    let old = txn
        .get(res, ns, name)
        .ok_or_else(|| ApiError::not_found(&plural, name))?;
    if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
        let have = meta_str(&old, "uid").unwrap_or("");
        if uid != have {
            return Err(ApiError::conflict_msg(
                &plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if let Some(rv) = opts
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let have = meta_str(&old, "resourceVersion").unwrap_or("");
        if rv != have {
            return Err(ApiError::conflict_msg(
                &plural,
                name,
                &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"),
            ));
        }
    }
    if def.behavior == Behavior::Namespace && SYSTEM_NAMESPACES.contains(&name) {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            ),
            details: Some(json!({"name": name, "kind": "namespaces"})),
        });
    }
    let finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if def.behavior == Behavior::Namespace || finalizers {
        if meta_str(&old, "deletionTimestamp").is_some() {
            return Ok(Deleted::Pending(old));
        }
        let mut marked = (*old).clone();
        meta_mut(&mut marked).insert("deletionTimestamp".into(), json!(now_rfc3339()));
        meta_mut(&mut marked).insert("deletionGracePeriodSeconds".into(), json!(0));
        if def.behavior == Behavior::Namespace {
            set_field(&mut marked, &["status"], json!({"phase": "Terminating"}));
        }
        if def.generation {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut marked).insert("generation".into(), json!(g + 1));
        }
        if ctx.dry_run {
            return Ok(Deleted::Pending(Arc::new(marked)));
        }
        return Ok(Deleted::Pending(txn.put(res, ns, name, marked)));
    }
    if ctx.dry_run {
        return Ok(Deleted::Gone(old));
    }
    txn.delete(res, ns, name)
        .map(Deleted::Gone)
        .ok_or_else(|| ApiError::not_found(&plural, name))
}

/// Empties a terminating namespace and removes it (the namespace controller's job).
pub fn finish_namespace(txn: &mut Txn, reg: &Registry, ns: &str) {
    for (res, def) in reg.defs().iter().enumerate() {
        if !def.namespaced {
            continue;
        }
        let names: Vec<String> = scan(txn.state, res, Some(ns))
            .filter_map(|v| meta_str(v, "name").map(String::from))
            .collect();
        for n in names {
            txn.delete(res, ns, &n);
        }
    }
    if let Some(ns_res) = reg.index_of(Behavior::Namespace) {
        let terminating = txn
            .get(ns_res, "", ns)
            .is_some_and(|n| meta_str(&n, "deletionTimestamp").is_some());
        if terminating {
            txn.delete(ns_res, "", ns);
        }
    }
}

/// Binds a pod to a node (`pods/<name>/binding`).
pub fn bind(
    txn: &mut Txn,
    ctx: &Ctx,
    res: usize,
    ns: &str,
    name: &str,
    binding: &Value,
) -> ApiResult<()> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::required("Binding", name, "target.name"))?;
    let old = txn
        .get(res, ns, name)
        .ok_or_else(|| ApiError::not_found("pods", name))?;
    if let Some(cur) = old.pointer("/spec/nodeName").and_then(Value::as_str) {
        if !cur.is_empty() {
            return Err(ApiError::conflict_msg(
                "pods",
                name,
                &format!("pod {name} is already assigned to node \"{cur}\""),
            ));
        }
    }
    let mut new = (*old).clone();
    set_field(&mut new, &["spec", "nodeName"], json!(node));
    if !ctx.dry_run {
        txn.put(res, ns, name, new);
    }
    Ok(())
}
