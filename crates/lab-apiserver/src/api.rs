//! HTTP routing and the REST verbs.

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::objects::{self, Ctx, Deleted, Sub};
use crate::patch;
use crate::registry::{Behavior, Registry, ResourceDef};
use crate::selector::{FieldSelector, LabelSelector};
use crate::services::ServiceNet;
use crate::store::{scan, scan_after, Store};
use crate::table;
use crate::tls::token_eq;
use crate::util::meta_str;
use crate::watch::{error_line, Watch};
use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Shared state of a running server.
pub struct App {
    pub store: Store,
    pub reg: Arc<Registry>,
    pub net: ServiceNet,
    pub token: String,
    pub server_addr: String,
    pub max_body: usize,
    pub bookmark_interval: Duration,
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn text(code: u16, s: &'static str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(s))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

/// Parsed request context.
struct Req {
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }
    fn wants_table(&self) -> bool {
        self.accept.contains("as=Table")
    }
}

/// The resource a path names.
struct Target {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Health,
    Version,
    ApiVersions,
    GroupList,
    Group(String),
    ResourceList(String, String),
    OpenApiRoot,
    OpenApiGv(String, String),
    Resource(Target),
}

fn route(reg: &Registry, path: &str) -> ApiResult<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => return Ok(Route::Health),
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::ApiVersions),
        ["apis"] => return Ok(Route::GroupList),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["openapi", "v3"] => return Ok(Route::OpenApiRoot),
        ["openapi", "v3", "api", v] => return Ok(Route::OpenApiGv(String::new(), v.to_string())),
        ["openapi", "v3", "apis", g, v] => {
            return Ok(Route::OpenApiGv(g.to_string(), v.to_string()))
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    if rest.is_empty() {
        return Ok(Route::ResourceList(group.to_string(), version.to_string()));
    }
    let find = |plural: &str| reg.find(group, version, plural);
    let s = |x: &&str| x.to_string();
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if find(plural).is_some_and(|i| reg.get(i).namespaced) =>
        {
            let res = find(plural).ok_or_else(ApiError::path_not_found)?;
            match tail {
                [] => Target {
                    res,
                    ns: Some(ns.to_string()),
                    name: None,
                    sub: None,
                },
                [name] => Target {
                    res,
                    ns: Some(ns.to_string()),
                    name: Some(s(name)),
                    sub: None,
                },
                [name, sub] => Target {
                    res,
                    ns: Some(ns.to_string()),
                    name: Some(s(name)),
                    sub: Some(s(sub)),
                },
                _ => return Err(ApiError::path_not_found()),
            }
        }
        [plural, tail @ ..] => {
            let res = find(plural).ok_or_else(ApiError::path_not_found)?;
            let namespaced = reg.get(res).namespaced;
            match tail {
                [] => Target {
                    res,
                    ns: None,
                    name: None,
                    sub: None,
                },
                [name] if !namespaced => Target {
                    res,
                    ns: None,
                    name: Some(s(name)),
                    sub: None,
                },
                [name, sub] if !namespaced => Target {
                    res,
                    ns: None,
                    name: Some(s(name)),
                    sub: Some(s(sub)),
                },
                _ => return Err(ApiError::path_not_found()),
            }
        }
        [] => return Err(ApiError::path_not_found()),
    };
    if let Some(sub) = &target.sub {
        let def = reg.get(target.res);
        let ok = match sub.as_str() {
            "status" => def.status_subresource,
            "binding" => def.behavior == Behavior::Pod,
            "finalize" => def.behavior == Behavior::Namespace,
            _ => false,
        };
        if !ok {
            return Err(ApiError::path_not_found());
        }
    }
    Ok(Route::Resource(target))
}

/// Reads the body up to `max` bytes. A larger body is drained (up to a bound) and answered
/// 413: answering before the client has finished sending would break its pipe instead.
async fn read_body(mut body: Incoming, max: usize) -> ApiResult<Bytes> {
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= max {
                buf.extend_from_slice(&data);
            } else if total > DRAIN_LIMIT {
                break;
            }
        }
    }
    if total > max {
        return Err(ApiError::too_large(max));
    }
    Ok(buf.freeze())
}

fn authorized(app: &App, req: &Request<Incoming>) -> bool {
    let Some(h) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Ok(s) = h.to_str() else { return false };
    let Some(tok) = s.strip_prefix("Bearer ") else {
        return false;
    };
    token_eq(tok.trim().as_bytes(), app.token.as_bytes())
}

/// Entry point for one HTTP request; never fails (errors become Status answers).
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let route = route(&app.reg, &path);
    if !matches!(route, Ok(Route::Health)) && !authorized(&app, &req) {
        return error_response(&ApiError::unauthorized());
    }
    let route = match route {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let hdr = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let accept = hdr(header::ACCEPT);
    let content_type = hdr(header::CONTENT_TYPE);
    let method = req.method().clone();
    tracing::debug!(%method, uri = %req.uri(), accept, content_type, "request");
    let body = match read_body(req.into_body(), app.max_body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let r = Req {
        method,
        query,
        accept,
        content_type,
        body,
    };
    let result = match route {
        Route::Health => return text(200, "ok"),
        Route::Version => Ok(json_response(200, &discovery::version())),
        Route::ApiVersions | Route::GroupList if discovery::wants_aggregated(&r.accept) => {
            let core = matches!(route, Route::ApiVersions);
            let body =
                serde_json::to_vec(&discovery::aggregated(&app.reg, core)).unwrap_or_default();
            Ok(Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, discovery::AGGREGATED_CONTENT_TYPE)
                .body(full(body))
                .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
        }
        Route::ApiVersions => Ok(json_response(
            200,
            &discovery::api_versions(&app.server_addr),
        )),
        Route::GroupList => Ok(json_response(200, &discovery::api_group_list(&app.reg))),
        Route::Group(g) => discovery::api_group(&app.reg, &g)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::ResourceList(g, v) => discovery::resource_list(&app.reg, &g, &v)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::OpenApiRoot => Ok(json_response(200, &discovery::openapi_root(&app.reg))),
        Route::OpenApiGv(g, v) => discovery::openapi_gv(&app.reg, &g, &v)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::Resource(t) => resource(&app, t, r).await,
    };
    match result {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

async fn resource(app: &Arc<App>, t: Target, r: Req) -> ApiResult<Response<Body>> {
    let def = *app.reg.get(t.res);
    let ctx = Ctx {
        reg: &app.reg,
        net: &app.net,
        dry_run: r.q("dryRun").is_some_and(|v| v == "All"),
    };
    let ns = t.ns.clone().unwrap_or_default();
    match (&r.method, &t.name, t.sub.as_deref()) {
        (&Method::GET, None, _) if r.flag("watch") => watch(app, &t, &def, &r).await,
        (&Method::GET, None, _) => list(app, &t, &def, &r).await,
        (&Method::GET, Some(name), _) if r.flag("watch") => {
            let mut q = r.query.clone();
            q.insert("fieldSelector".into(), format!("metadata.name={name}"));
            let t2 = Target {
                res: t.res,
                ns: t.ns.clone(),
                name: None,
                sub: None,
            };
            watch(app, &t2, &def, &Req { query: q, ..r }).await
        }
        (&Method::GET, Some(name), _) => {
            let obj = app
                .store
                .read(|st| st.get(t.res, &ns, name).cloned())
                .ok_or_else(|| ApiError::not_found(&def.qualified_plural(), name))?;
            if r.wants_table() {
                let mut meta = Map::new();
                meta.insert(
                    "resourceVersion".into(),
                    json!(meta_str(&obj, "resourceVersion").unwrap_or("")),
                );
                return Ok(json_response(
                    200,
                    &table::table(&def, std::iter::once(obj.as_ref()), meta, true),
                ));
            }
            Ok(json_response(200, &obj))
        }
        (&Method::POST, None, None) => {
            let body = objects::decode_body(&r.body, &r.content_type, def.kind)?;
            let url_ns = t.ns.as_deref();
            let obj = app
                .store
                .mutate(|txn| objects::create(txn, &ctx, t.res, url_ns, body))
                .await?;
            Ok(json_response(201, &obj))
        }
        (&Method::POST, Some(name), Some("binding")) => {
            let body = objects::decode_body(&r.body, &r.content_type, "Binding")?;
            app.store
                .mutate(|txn| objects::bind(txn, &ctx, t.res, &ns, name, &body))
                .await?;
            Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "code": 201}),
            ))
        }
        (&Method::PUT, Some(name), sub) => {
            let sub = match sub {
                None => Sub::Main,
                Some("status") => Sub::Status,
                Some("finalize") => Sub::Finalize,
                _ => return Err(ApiError::method_not_allowed()),
            };
            let body = objects::decode_body(&r.body, &r.content_type, def.kind)?;
            let obj = app
                .store
                .mutate(|txn| objects::update(txn, &ctx, t.res, &ns, name, body, sub))
                .await?;
            if sub == Sub::Finalize && obj.get("metadata").is_some() {
                maybe_spawn_cleanup(app, &def, &obj);
            }
            Ok(json_response(200, &obj))
        }
        (&Method::PATCH, Some(name), sub) => {
            let sub = match sub {
                None => Sub::Main,
                Some("status") => Sub::Status,
                _ => return Err(ApiError::method_not_allowed()),
            };
            patch_object(app, &ctx, &def, t.res, &ns, name, sub, &r).await
        }
        (&Method::DELETE, Some(name), None) => {
            let opts = if r.body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                objects::decode_body(&r.body, &r.content_type, "DeleteOptions")?
            };
            let out = app
                .store
                .mutate(|txn| objects::delete(txn, &ctx, t.res, &ns, name, &opts))
                .await?;
            match out {
                Deleted::Gone(obj) => Ok(json_response(200, &obj)),
                Deleted::Pending(obj) => {
                    if !ctx.dry_run {
                        maybe_spawn_cleanup(app, &def, &obj);
                    }
                    Ok(json_response(200, &obj))
                }
            }
        }
        (&Method::DELETE, None, None) => delete_collection(app, &ctx, &t, &def, &r).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A namespace marked for deletion is emptied and removed in the background, as the
/// namespace controller of a real cluster does.
fn maybe_spawn_cleanup(app: &Arc<App>, def: &ResourceDef, obj: &Value) {
    if def.behavior != Behavior::Namespace || meta_str(obj, "deletionTimestamp").is_none() {
        return;
    }
    let Some(name) = meta_str(obj, "name").map(String::from) else {
        return;
    };
    let app = app.clone();
    tokio::spawn(async move {
        let reg = app.reg.clone();
        if let Err(e) = app
            .store
            .mutate(|txn| {
                objects::finish_namespace(txn, &reg, &name);
                Ok(())
            })
            .await
        {
            tracing::warn!(namespace = name, error = %e, "emptying the namespace failed");
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn patch_object(
    app: &Arc<App>,
    ctx: &Ctx<'_>,
    def: &ResourceDef,
    res: usize,
    ns: &str,
    name: &str,
    sub: Sub,
    r: &Req,
) -> ApiResult<Response<Body>> {
    let ct = r
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let kind = match ct.as_str() {
        "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/apply-patch+yaml"
        | "application/apply-patch+json" => ct.as_str(),
        _ => return Err(ApiError::unsupported_media_type(&r.content_type)),
    };
    let patch_doc: Value = if kind.starts_with("application/apply-patch") {
        objects::decode_body(&r.body, "yaml", def.kind)?
    } else {
        serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
    };
    let apply = kind.starts_with("application/apply-patch");
    if apply {
        if let Some(n) = meta_str(&patch_doc, "name") {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
    }
    let plural = def.qualified_plural();
    let (obj, created) = app
        .store
        .mutate(|txn| {
            let Some(old) = txn.get(res, ns, name) else {
                if apply && sub == Sub::Main {
                    // Server-side apply upserts: an absent object is created.
                    let mut body = patch_doc.clone();
                    objects::set_field(&mut body, &["metadata", "name"], json!(name));
                    let url_ns = def.namespaced.then_some(ns);
                    return objects::create(txn, ctx, res, url_ns, body).map(|o| (o, true));
                }
                return Err(ApiError::not_found(&plural, name));
            };
            let mut doc = (*old).clone();
            match kind {
                "application/merge-patch+json" => patch::merge_patch(&mut doc, &patch_doc),
                "application/json-patch+json" => {
                    patch::json_patch(&mut doc, &patch_doc).map_err(|e| {
                        ApiError::invalid_value(def.kind, name, "patch", &json!(null), &e)
                    })?
                }
                "application/strategic-merge-patch+json" => {
                    patch::strategic_merge(&mut doc, &patch_doc)
                        .map_err(|e| ApiError::bad_request(format!("strategic merge patch: {e}")))?
                }
                _ => {
                    // Apply: a merge of the applied configuration into the live object
                    // (no field ownership, so no apply conflicts).
                    let mut p = patch_doc.clone();
                    if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                        m.remove("managedFields");
                    }
                    patch::strategic_merge(&mut doc, &p)
                        .map_err(|e| ApiError::bad_request(format!("apply: {e}")))?
                }
            }
            // A patch that sets metadata.resourceVersion is a precondition; otherwise the
            // patch applies to whatever is current.
            if !doc.is_object() {
                return Err(ApiError::bad_request(
                    "the patched object is not a JSON object",
                ));
            }
            objects::update(txn, ctx, res, ns, name, doc, sub).map(|o| (o, false))
        })
        .await?;
    Ok(json_response(if created { 201 } else { 200 }, &obj))
}

async fn delete_collection(
    app: &Arc<App>,
    ctx: &Ctx<'_>,
    t: &Target,
    def: &ResourceDef,
    r: &Req,
) -> ApiResult<Response<Body>> {
    let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), def)?;
    let res = t.res;
    let ns = t.ns.clone();
    let deleted = app
        .store
        .mutate(|txn| {
            let keys: Vec<(String, String)> = scan(txn.state, res, ns.as_deref())
                .filter(|v| labels.matches(v) && fields.matches(v))
                .map(|v| {
                    (
                        meta_str(v, "namespace").unwrap_or("").to_string(),
                        meta_str(v, "name").unwrap_or("").to_string(),
                    )
                })
                .collect();
            let mut out = Vec::new();
            for (n, name) in keys {
                match objects::delete(txn, ctx, res, &n, &name, &json!({}))? {
                    Deleted::Gone(o) | Deleted::Pending(o) => out.push(o),
                }
            }
            Ok(out)
        })
        .await?;
    let rv = app.store.current_rv();
    let items: Vec<&Value> = deleted.iter().map(|v| v.as_ref()).collect();
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    ))
}

/// Continue tokens: the key to start after, base64 JSON (opaque to clients).
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    let v = json!({"rv": rv, "ns": ns, "name": name});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn decode_continue(tok: &str) -> ApiResult<(String, String)> {
    let bad = || ApiError::bad_request("continue key is not valid: malformed token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tok)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v.get("ns")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string(),
        v.get("name")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string(),
    ))
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

/// Waits (up to 3 s, as kube-apiserver) for the store to reach `rv`.
async fn wait_for_rv(app: &App, rv: u64) -> ApiResult<()> {
    let start = tokio::time::Instant::now();
    loop {
        let cur = app.store.current_rv();
        if cur >= rv {
            return Ok(());
        }
        if start.elapsed() >= Duration::from_secs(3) {
            return Err(ApiError::timeout_too_large_rv(rv, cur));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes an object without `kind`/`apiVersion` (list items carry neither).
fn write_item(buf: &mut Vec<u8>, v: &Value) {
    let Value::Object(m) = v else {
        let _ = serde_json::to_writer(&mut *buf, v);
        return;
    };
    buf.push(b'{');
    let mut first = true;
    for (k, val) in m {
        if k == "kind" || k == "apiVersion" {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        let _ = serde_json::to_writer(&mut *buf, k);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut *buf, val);
    }
    buf.push(b'}');
}

async fn list(app: &Arc<App>, t: &Target, def: &ResourceDef, r: &Req) -> ApiResult<Response<Body>> {
    let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), def)?;
    let rv_param = r.q("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = r.q("resourceVersionMatch").filter(|s| !s.is_empty());
    if rv_match.is_some() && rv_param.is_none() {
        return Err(ApiError::invalid_list_options(
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    let any_state = rv_param == Some("0");
    if let Some(rv) = rv_param.filter(|_| !any_state) {
        let rv = parse_rv(rv)?;
        wait_for_rv(app, rv).await?;
        if rv_match == Some("Exact") && rv != app.store.current_rv() {
            return Err(ApiError::gone(
                "The resourceVersion for the provided list is too old.",
            ));
        }
    }
    let limit = if any_state {
        0
    } else {
        r.q("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let start = r
        .q("continue")
        .filter(|s| !s.is_empty())
        .map(decode_continue)
        .transpose()?;
    let ns = t.ns.clone();
    let unfiltered = labels.is_empty() && fields.is_empty();
    let (items, rv, next, remaining) = app.store.read(|st| {
        let mut items: Vec<Arc<Value>> = Vec::new();
        let mut last_key = None;
        let mut iter = scan_after(st, t.res, ns.as_deref(), start.as_ref());
        for (key, v) in iter.by_ref() {
            if !(unfiltered || (labels.matches(v) && fields.matches(v))) {
                continue;
            }
            items.push(v.clone());
            last_key = Some(key);
            if limit > 0 && items.len() >= limit {
                break;
            }
        }
        // What is left: without selectors a plain count over the index, no object reads.
        let remaining = if unfiltered {
            iter.count()
        } else {
            iter.filter(|(_, v)| labels.matches(v) && fields.matches(v))
                .count()
        };
        let next = last_key
            .filter(|_| remaining > 0)
            .map(|(n, name)| encode_continue(st.rv, n, name));
        (items, st.rv, next, remaining)
    });
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    if let Some(c) = next {
        meta.insert("continue".into(), json!(c));
        meta.insert("remainingItemCount".into(), json!(remaining));
    }
    if r.wants_table() {
        return Ok(json_response(
            200,
            &table::table(def, items.iter().map(|v| v.as_ref()), meta, true),
        ));
    }
    // Hand-built and streamed in chunks: a 50k-item list never sits whole in memory, and
    // the first bytes leave before the last item is serialized.
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut head, &format!("{}List", def.kind));
    head.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut head, &def.api_version());
    head.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut head, &meta);
    head.extend_from_slice(b",\"items\":[");
    if items.len() <= LIST_CHUNK {
        let mut buf = head;
        write_items(&mut buf, &items, 0);
        buf.extend_from_slice(b"]}");
        return Ok(Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .body(full(buf))
            .unwrap_or_else(|_| Response::new(full(Bytes::new()))));
    }
    let chunks = futures::stream::unfold(
        (Some(head), items, 0usize),
        |(head, items, at)| async move {
            if at > items.len() {
                return None;
            }
            let end = (at + LIST_CHUNK).min(items.len());
            let mut buf = head.unwrap_or_default();
            buf.reserve((end - at) * 1024);
            write_items(&mut buf, &items[at..end], at);
            if end == items.len() {
                buf.extend_from_slice(b"]}");
            }
            // `at` past the end marks the stream as finished after the closing bracket.
            let next = if end == items.len() { end + 1 } else { end };
            Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from(buf))),
                (None, items, next),
            ))
        },
    );
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed_unsync(StreamBody::new(chunks)))
        .unwrap_or_else(|_| Response::new(full(Bytes::new()))))
}

/// Items per streamed chunk of a list answer.
const LIST_CHUNK: usize = 256;

/// Writes `items` comma-separated; `first_index` tells whether a leading comma is needed.
fn write_items(buf: &mut Vec<u8>, items: &[Arc<Value>], first_index: usize) {
    for (i, v) in items.iter().enumerate() {
        if first_index + i > 0 {
            buf.push(b',');
        }
        write_item(buf, v);
    }
}

fn stream_response(w: Watch) -> Response<Body> {
    let s = futures::stream::unfold(w, |mut w| async move {
        let line = w.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), w))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed_unsync(StreamBody::new(s)))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

fn single_event_response(line: Bytes) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(line))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())))
}

async fn watch(
    app: &Arc<App>,
    t: &Target,
    def: &ResourceDef,
    r: &Req,
) -> ApiResult<Response<Body>> {
    let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), def)?;
    if r.flag("sendInitialEvents") {
        if r.q("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::invalid_list_options(
                "resourceVersionMatch",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        // Streaming lists are not implemented: refuse rather than ignore the parameter.
        return Err(ApiError::invalid_list_options(
            "sendInitialEvents",
            "Forbidden: sendInitialEvents (watch-list) is not supported by the lab API server; list, then watch",
        ));
    }
    let timeout = r
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .or(Some(Duration::from_secs(1800)));
    let bookmarks = r.flag("allowWatchBookmarks");
    let table = r.wants_table();
    let rv_param = r
        .q("resourceVersion")
        .filter(|s| !s.is_empty() && *s != "0");
    let ns = t.ns.clone();
    let (initial, start_rv, sub) = match rv_param {
        None => {
            let (items, rv, sub) = app.store.snapshot_and_subscribe(t.res, ns.as_deref(), |v| {
                labels.matches(v) && fields.matches(v)
            });
            (items, rv, sub)
        }
        Some(s) => {
            let rv = parse_rv(s)?;
            // A too-new RV waits (up to 3 s, as kube-apiserver) for the store to catch up.
            if let Err(e) = wait_for_rv(app, rv).await {
                return Ok(single_event_response(error_line(&e.to_status())));
            }
            match app.store.subscribe_from(rv) {
                Ok(sub) => (Vec::new(), rv, sub),
                Err(compacted) => {
                    let e = ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        compacted + 1
                    ));
                    return Ok(single_event_response(error_line(&e.to_status())));
                }
            }
        }
    };
    let w = Watch::new(
        t.res,
        *def,
        ns,
        labels,
        fields,
        bookmarks,
        app.bookmark_interval,
        timeout,
        table,
        start_rv,
        initial,
        sub,
    );
    Ok(stream_response(w))
}
