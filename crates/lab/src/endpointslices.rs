//! Lab stand-in for the EndpointSlice controller of kube-controller-manager.
//!
//! For every Service with a non-empty selector (not ExternalName; headless ones included)
//! it keeps EndpointSlices listing the pods of the Service's namespace that match the
//! selector and have an address, one set per address family of the Service
//! (`spec.ipFamilies`, else its cluster IPs, else IPv4):
//! - endpoint conditions as upstream: `serving` = pod Ready, `terminating` = the pod has a
//!   `deletionTimestamp`, `ready` = serving and not terminating; with
//!   `publishNotReadyAddresses` every endpoint is ready and serving. Pods in a terminal
//!   phase are left out. `nodeName`, `targetRef` (and `hostname` for pods whose
//!   `subdomain` is the Service) are set.
//! - ports: each Service port with its name, protocol, appProtocol and the target port
//!   resolved per pod: a number as it is, a name through the pod's containerPorts of the
//!   same protocol. As upstream, a pod lacking a named port has that port left out of its
//!   port list, and pods with different port lists go to different slices.
//! - slices are named deterministically `<service>-<ipv4|ipv6>-<8 hex of the port list>`
//!   (upstream uses generated names; deterministic ones make a restarted controller find its
//!   own); a family with no endpoints gets one empty placeholder slice, as upstream.
//! - labels: the Service's own labels, `kubernetes.io/service-name`,
//!   `service.kubernetes.io/headless` for headless Services, and
//!   `endpointslice.kubernetes.io/managed-by` = [`MANAGED_BY`] — a lab name, NOT upstream's
//!   `endpointslice-controller.k8s.io`, so that slices written by a real controller are
//!   never touched. An owner reference points at the Service.
//!
//! Slices are written only when they differ from what is there, and slices of deleted
//! Services are deleted explicitly (the lab API server does no garbage collection).
//! No 100-endpoint limit per slice, no topology hints or zones.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};

/// `endpointslice.kubernetes.io/managed-by` of the lab's slices.
pub const MANAGED_BY: &str = "endpointslice-controller.lab.ovnk.org";
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
const RETRY_START: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    #[error("service {service}: EndpointSlice {slice}: {source}")]
    Write {
        service: String,
        slice: String,
        source: kube::Error,
    },
}

/// The pod's Ready condition is True.
pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(st) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = st
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if out.is_empty() {
        out.extend(st.pod_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()));
    }
    out
}

/// `IPv4`/`IPv6` families the Service's slices are kept for.
pub fn address_types(svc: &Service) -> Vec<&'static str> {
    let spec = svc.spec.as_ref();
    let fam = |f: &str| match f {
        "IPv6" => Some("IPv6"),
        "IPv4" => Some("IPv4"),
        _ => None,
    };
    let mut out: Vec<&'static str> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| fam(f))
        .collect();
    if out.is_empty() {
        out = spec
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
            .collect();
    }
    if out.is_empty() {
        out.push("IPv4");
    }
    out.dedup();
    out
}

/// Whether the Service gets managed slices at all.
pub fn has_selector(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The port a Service port reaches on `pod`, or `None` when a named target port is not
/// among the pod's containerPorts of that protocol.
pub fn resolve_target_port(sp: &ServicePort, pod: &Pod) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) if *n == 0 => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let containers = pod
                .spec
                .as_ref()
                .map(|s| s.containers.as_slice())
                .unwrap_or_default();
            containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto)
                        .then_some(p.container_port)
                })
        }
    }
}

fn hash_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:08x}", h & 0xffff_ffff)
}

fn slice_meta(svc: &Service, name: String) -> ObjectMeta {
    let svc_name = svc.name_any();
    let mut labels: BTreeMap<String, String> = svc.labels().clone();
    labels.insert(LABEL_SERVICE_NAME.into(), svc_name.clone());
    labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        labels.remove(LABEL_HEADLESS);
    }
    ObjectMeta {
        name: Some(name),
        namespace: svc.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: svc_name,
            uid: svc.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    }
}

/// The slices `svc` should have, given the pods of its namespace.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSlice> {
    if !has_selector(svc) {
        return Vec::new();
    }
    let svc_name = svc.name_any();
    let spec = svc.spec.as_ref();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let svc_ports: &[ServicePort] = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let mut out = Vec::new();
    for fam in address_types(svc) {
        // Port list (as JSON, for grouping) → (ports, endpoints).
        let mut groups: BTreeMap<String, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
        for pod in pods.iter().filter(|p| selects(svc, p)) {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded") | Some("Failed")) {
                continue;
            }
            let Some(ip) = pod_ips(pod)
                .into_iter()
                .find(|ip| ip.is_ipv4() == (fam == "IPv4"))
            else {
                continue;
            };
            let ports: Vec<EndpointPort> = svc_ports
                .iter()
                .filter_map(|sp| {
                    Some(EndpointPort {
                        name: Some(sp.name.clone().unwrap_or_default()),
                        port: Some(resolve_target_port(sp, pod)?),
                        protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            let ready = pod_ready(pod);
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let pspec = pod.spec.as_ref();
            let hostname = pspec
                .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
                .and_then(|s| s.hostname.clone());
            let ep = Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(publish_not_ready || (ready && !terminating)),
                    serving: Some(publish_not_ready || ready),
                    terminating: Some(terminating),
                }),
                hostname,
                node_name: pspec.and_then(|s| s.node_name.clone()),
                target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: pod.namespace(),
                    name: Some(pod.name_any()),
                    uid: pod.uid(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let gkey = serde_json::to_string(&ports).unwrap_or_default();
            let g = groups.entry(gkey).or_insert_with(|| (ports, Vec::new()));
            g.1.push(ep);
        }
        let fam_tag = if fam == "IPv4" { "ipv4" } else { "ipv6" };
        if groups.is_empty() {
            // Placeholder: the Service has slices even with no endpoints, as upstream.
            out.push(EndpointSlice {
                metadata: slice_meta(svc, format!("{svc_name}-{fam_tag}-{}", hash_hex("[]"))),
                address_type: fam.into(),
                endpoints: Some(Vec::new()),
                ports: Some(Vec::new()),
            });
        }
        for (gkey, (ports, mut endpoints)) in groups {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            out.push(EndpointSlice {
                metadata: slice_meta(svc, format!("{svc_name}-{fam_tag}-{}", hash_hex(&gkey))),
                address_type: fam.into(),
                endpoints: Some(endpoints),
                ports: Some(ports),
            });
        }
    }
    out
}

/// Whether `existing` already says what `want` says (the parts this controller owns).
fn same_slice(existing: &EndpointSlice, want: &EndpointSlice) -> bool {
    let part = |s: &EndpointSlice| {
        serde_json::json!({
            "labels": s.metadata.labels,
            "owners": s.metadata.owner_references,
            "addressType": s.address_type,
            "endpoints": s.endpoints.clone().unwrap_or_default(),
            "ports": s.ports.clone().unwrap_or_default(),
        })
    };
    part(existing) == part(want)
}

/// What a watch event makes dirty.
enum Dirty {
    Service(String, String),
    Namespace(String),
    All,
}

fn dirty_of<K: kube::Resource>(ev: &Event<K>, f: impl Fn(&K) -> Option<Dirty>) -> Option<Dirty> {
    match ev {
        Event::Apply(o) | Event::Delete(o) => f(o),
        Event::InitDone => Some(Dirty::All),
        Event::Init | Event::InitApply(_) => None,
    }
}

/// Runs the controller until the future is dropped; API errors are logged and retried.
pub async fn run(client: Client) -> Result<(), EndpointSliceError> {
    let (svcs, svcs_w) = reflector::store::<Service>();
    let (pods, pods_w) = reflector::store::<Pod>();
    let (slices, slices_w) = reflector::store::<EndpointSlice>();
    let svc_stream = reflector::reflector(
        svcs_w,
        watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .map(|r| {
        r.map(|ev| {
            dirty_of(&ev, |s: &Service| {
                Some(Dirty::Service(s.namespace()?, s.name_any()))
            })
        })
    });
    let pod_stream = reflector::reflector(
        pods_w,
        watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .map(|r| r.map(|ev| dirty_of(&ev, |p: &Pod| Some(Dirty::Namespace(p.namespace()?)))));
    let slice_stream = reflector::reflector(
        slices_w,
        watcher::watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}")),
        ),
    )
    .default_backoff()
    .map(|r| {
        r.map(|ev| {
            dirty_of(&ev, |s: &EndpointSlice| {
                Some(Dirty::Service(
                    s.namespace()?,
                    s.labels().get(LABEL_SERVICE_NAME)?.clone(),
                ))
            })
        })
    });
    let mut events = futures::stream::select(
        futures::stream::select(svc_stream.boxed(), pod_stream.boxed()),
        slice_stream.boxed(),
    );
    let ctl = Controller {
        client,
        svcs,
        pods,
        slices,
    };
    let mut pending = Pending::default();
    // Failed keys: when to retry, and the next backoff.
    let mut retry: HashMap<(String, String), (tokio::time::Instant, Duration)> = HashMap::new();
    let mut ready = false;
    loop {
        let next_retry = retry.values().map(|(t, _)| *t).min();
        let sleep = async {
            match next_retry {
                Some(t) => tokio::time::sleep_until(t).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.next() => {
                if !pending.take(ev) {
                    return Ok(());
                }
                // Coalesce a burst into one pass.
                while let Some(ev) = futures::FutureExt::now_or_never(events.next()) {
                    if !pending.take(ev) {
                        return Ok(());
                    }
                }
            }
            _ = sleep => {
                let now = tokio::time::Instant::now();
                for (k, (t, _)) in retry.iter() {
                    if *t <= now {
                        pending.dirty.insert(k.clone());
                    }
                }
            }
        }
        if !ready {
            // Reconciling before all three lists are in would delete slices of Services
            // not listed yet.
            ready = ctl.svcs.wait_until_ready().now_or_ready()
                && ctl.pods.wait_until_ready().now_or_ready()
                && ctl.slices.wait_until_ready().now_or_ready();
            if !ready {
                continue;
            }
            pending.all = true;
        }
        if pending.all {
            pending.all = false;
            for s in ctl.svcs.state() {
                if let Some(ns) = s.namespace() {
                    pending.dirty.insert((ns, s.name_any()));
                }
            }
            // Slices whose Service is gone.
            for s in ctl.slices.state() {
                if let (Some(ns), Some(n)) = (s.namespace(), s.labels().get(LABEL_SERVICE_NAME)) {
                    pending.dirty.insert((ns, n.clone()));
                }
            }
        }
        if !pending.namespaces.is_empty() {
            for s in ctl.svcs.state() {
                if let Some(ns) = s.namespace().filter(|ns| pending.namespaces.contains(ns)) {
                    pending.dirty.insert((ns, s.name_any()));
                }
            }
            pending.namespaces.clear();
        }
        let mut keys: Vec<(String, String)> = pending.dirty.drain().collect();
        keys.sort();
        // One snapshot per pass, indexed, instead of a scan of the stores per Service.
        let snap = (!keys.is_empty()).then(|| ctl.snapshot());
        for key in keys {
            let Some(snap) = snap.as_ref() else { break };
            match ctl.reconcile(snap, &key.0, &key.1).await {
                Ok(()) => {
                    retry.remove(&key);
                }
                Err(e) => {
                    let backoff = retry.get(&key).map(|(_, b)| *b).unwrap_or(RETRY_START);
                    tracing::warn!("{e}; retrying in {backoff:?}");
                    retry.insert(
                        key,
                        (
                            tokio::time::Instant::now() + backoff,
                            (backoff * 2).min(RETRY_MAX),
                        ),
                    );
                }
            }
        }
    }
}

/// What the next pass must reconcile.
#[derive(Default)]
struct Pending {
    dirty: HashSet<(String, String)>,
    namespaces: HashSet<String>,
    all: bool,
}

impl Pending {
    /// Records one stream item; false when the stream ended.
    fn take(&mut self, r: Option<Result<Option<Dirty>, watcher::Error>>) -> bool {
        match r {
            None => return false,
            Some(Err(e)) => tracing::warn!("endpointslice controller watch: {e}"),
            Some(Ok(None)) => {}
            Some(Ok(Some(Dirty::All))) => self.all = true,
            Some(Ok(Some(Dirty::Namespace(ns)))) => {
                self.namespaces.insert(ns);
            }
            Some(Ok(Some(Dirty::Service(ns, n)))) => {
                self.dirty.insert((ns, n));
            }
        }
        true
    }
}

trait NowOrReady {
    fn now_or_ready(self) -> bool;
}
impl<F: std::future::Future> NowOrReady for F {
    fn now_or_ready(self) -> bool {
        futures::FutureExt::now_or_never(self).is_some()
    }
}

/// Creates or replaces `want` unless `known` (the cache's copy) already says the same. The
/// cache may lag behind our own writes: a create that finds the slice, or a replace with a
/// stale resourceVersion, reads the server's copy and tries once more.
async fn write_slice(
    api: &Api<EndpointSlice>,
    known: Option<Arc<EndpointSlice>>,
    want: &EndpointSlice,
) -> Result<(), kube::Error> {
    let name = want.name_any();
    let mut current = known;
    for attempt in 0..2 {
        let res = match &current {
            Some(e) if same_slice(e, want) => return Ok(()),
            Some(e) => {
                let mut upd = want.clone();
                upd.metadata.resource_version = e.metadata.resource_version.clone();
                api.replace(&name, &PostParams::default(), &upd).await
            }
            None => api.create(&PostParams::default(), want).await,
        };
        match res {
            Ok(_) => {
                tracing::debug!(slice = %name, "EndpointSlice written");
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 && attempt == 0 => {
                current = api.get_opt(&name).await?.map(Arc::new);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The stores' contents at the start of a pass, indexed for reconciling.
#[derive(Default)]
struct Snapshot {
    /// By namespace.
    pods: HashMap<String, Vec<Arc<Pod>>>,
    /// Ours, by (namespace, service name).
    slices: HashMap<(String, String), Vec<Arc<EndpointSlice>>>,
}

struct Controller {
    client: Client,
    svcs: Store<Service>,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
}

impl Controller {
    fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for p in self.pods.state() {
            if let Some(ns) = p.metadata.namespace.clone() {
                snap.pods.entry(ns).or_default().push(p);
            }
        }
        for s in self.slices.state() {
            let ours = s.labels().get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY);
            if let (true, Some(ns), Some(svc)) = (
                ours,
                s.metadata.namespace.clone(),
                s.labels().get(LABEL_SERVICE_NAME).cloned(),
            ) {
                snap.slices.entry((ns, svc)).or_default().push(s);
            }
        }
        snap
    }

    async fn reconcile(
        &self,
        snap: &Snapshot,
        ns: &str,
        name: &str,
    ) -> Result<(), EndpointSliceError> {
        let svc = self.svcs.get(&ObjectRef::new(name).within(ns));
        let want = match &svc {
            Some(svc) => desired_slices(
                svc,
                snap.pods.get(ns).map(Vec::as_slice).unwrap_or_default(),
            ),
            None => Vec::new(),
        };
        let existing: &[Arc<EndpointSlice>] = snap
            .slices
            .get(&(ns.to_string(), name.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let err = |slice: &str, source| EndpointSliceError::Write {
            service: format!("{ns}/{name}"),
            slice: slice.to_string(),
            source,
        };
        for w in &want {
            let wname = w.name_any();
            let known = existing.iter().find(|e| e.name_any() == wname).cloned();
            write_slice(&api, known, w)
                .await
                .map_err(|source| err(&wname, source))?;
        }
        for e in existing {
            let ename = e.name_any();
            if want.iter().any(|w| w.name_any() == ename) {
                continue;
            }
            match api.delete(&ename, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(err(&ename, source)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };

    fn eps(s: &EndpointSlice) -> &[Endpoint] {
        s.endpoints.as_deref().unwrap_or_default()
    }

    fn svc(ports: Vec<ServicePort>, families: &[&str], pnr: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("d".into()),
                uid: Some("svc-uid".into()),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(ports),
                ip_families: Some(families.iter().map(|s| s.to_string()).collect()),
                publish_not_ready_addresses: Some(pnr),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, port: i32, target: Option<IntOrString>) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: target,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn pod(name: &str, ips: &[&str], ready: bool, named: Option<(&str, i32)>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("d".into()),
                uid: Some(format!("{name}-uid")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: named.map(|(n, p)| {
                        vec![ContainerPort {
                            name: Some(n.into()),
                            container_port: p,
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ips: Some(ips.iter().map(|i| PodIP { ip: i.to_string() }).collect()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn named_ports_split_pods_into_slices() {
        let s = svc(
            vec![
                port("http", 80, Some(IntOrString::String("web".into()))),
                port("metrics", 9090, None),
            ],
            &["IPv4"],
            false,
        );
        let pods = vec![
            pod("a", &["10.0.0.2"], true, Some(("web", 8080))),
            pod("b", &["10.0.0.3"], true, None),
            pod("c", &["10.0.0.4"], true, Some(("web", 8080))),
        ];
        let slices = desired_slices(&s, &pods);
        assert_eq!(slices.len(), 2, "{slices:#?}");
        let with_http = slices
            .iter()
            .find(|s| s.ports.as_ref().unwrap().len() == 2)
            .unwrap();
        assert_eq!(with_http.ports.as_ref().unwrap()[0].port, Some(8080));
        assert_eq!(eps(with_http).len(), 2);
        let without = slices
            .iter()
            .find(|s| s.ports.as_ref().unwrap().len() == 1)
            .unwrap();
        assert_eq!(eps(without)[0].addresses, vec!["10.0.0.3"]);
        assert_eq!(
            without.ports.as_ref().unwrap()[0].name.as_deref(),
            Some("metrics")
        );
        let labels = with_http.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(labels["team"], "a");
    }

    #[test]
    fn dual_stack_and_readiness() {
        let s = svc(
            vec![port("", 80, Some(IntOrString::Int(8080)))],
            &["IPv4", "IPv6"],
            false,
        );
        let pods = vec![
            pod("a", &["10.0.0.2", "fd00::2"], true, None),
            pod("b", &["10.0.0.3", "fd00::3"], false, None),
        ];
        let slices = desired_slices(&s, &pods);
        assert_eq!(slices.len(), 2);
        let v6 = slices.iter().find(|s| s.address_type == "IPv6").unwrap();
        assert_eq!(eps(v6).len(), 2);
        assert_eq!(eps(v6)[0].addresses, vec!["fd00::2"]);
        let c = |i: usize| eps(v6)[i].conditions.clone().unwrap();
        assert_eq!((c(0).ready, c(0).serving), (Some(true), Some(true)));
        assert_eq!((c(1).ready, c(1).serving), (Some(false), Some(false)));
        // publishNotReadyAddresses: every endpoint ready.
        let s = svc(vec![port("", 80, None)], &["IPv4"], true);
        let slices = desired_slices(&s, &pods);
        assert!(eps(&slices[0])
            .iter()
            .all(|e| e.conditions.as_ref().unwrap().ready == Some(true)));
    }

    #[test]
    fn empty_service_gets_a_placeholder_and_externalname_nothing() {
        let s = svc(vec![port("", 80, None)], &["IPv4"], false);
        let slices = desired_slices(&s, &[]);
        assert_eq!(slices.len(), 1);
        assert!(eps(&slices[0]).is_empty());
        let mut ext = s.clone();
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(desired_slices(&ext, &[pod("a", &["10.0.0.2"], true, None)]).is_empty());
        assert!(same_slice(&slices[0], &slices[0].clone()));
    }
}
