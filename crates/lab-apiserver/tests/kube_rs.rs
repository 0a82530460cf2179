//! kube-rs 5 against the lab API server: CRUD, patches, watch, restart, 410 recovery.

mod common;

use common::{client, config, start, status_code, TestResult};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, ResourceExt, WatchEvent,
    WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, v: &str) -> Result<ConfigMap, serde_json::Error> {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "t"}}, "data": {"k": v}}),
    )
}

fn pod(name: &str, labels: serde_json::Value) -> Result<Pod, serde_json::Error> {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_patches_and_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let c = client(&server).await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    let created = cms.create(&PostParams::default(), &cm("a", "1")?).await?;
    let rv1: u64 = created
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()?;
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.metadata.generation, None,
        "ConfigMaps carry no generation"
    );

    let e = cms
        .create(&PostParams::default(), &cm("a", "1")?)
        .await
        .err();
    assert_eq!(e.as_ref().and_then(status_code), Some(409));

    // Merge, strategic, JSON patch, and apply.
    let pp = PatchParams::default();
    cms.patch("a", &pp, &Patch::Merge(json!({"data": {"m": "1"}})))
        .await?;
    cms.patch(
        "a",
        &pp,
        &Patch::Strategic(json!({"metadata": {"labels": {"s": "2"}}})),
    )
    .await?;
    let p: Patch<()> = Patch::Json(serde_json::from_value(json!([
        {"op": "add", "path": "/data/j", "value": "3"},
        {"op": "remove", "path": "/data/k"}
    ]))?);
    cms.patch("a", &pp, &p).await?;
    let ap = PatchParams::apply("ovnk").force();
    let applied = cms
        .patch(
            "a",
            &ap,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "a"}, "data": {"x": "4"}})),
        )
        .await?;
    let data = applied.data.clone().unwrap_or_default();
    assert_eq!(data.get("m").map(String::as_str), Some("1"));
    assert_eq!(data.get("j").map(String::as_str), Some("3"));
    assert_eq!(data.get("x").map(String::as_str), Some("4"));
    assert!(!data.contains_key("k"));
    assert_eq!(applied.labels().get("s").map(String::as_str), Some("2"));
    let rv2: u64 = applied
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()?;
    assert!(rv2 > rv1);

    // Apply creates when absent.
    let b = cms
        .patch(
            "b",
            &ap,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": "b"}, "data": {"y": "1"}})),
        )
        .await?;
    assert_eq!(b.metadata.name.as_deref(), Some("b"));

    // Replace with a stale resourceVersion → 409; with the current one → OK.
    let mut stale = created.clone();
    stale.data = Some([("z".to_string(), "9".to_string())].into());
    let e = cms.replace("a", &PostParams::default(), &stale).await.err();
    assert_eq!(e.as_ref().and_then(status_code), Some(409));
    let mut cur = cms.get("a").await?;
    cur.data = Some([("z".to_string(), "9".to_string())].into());
    let replaced = cms.replace("a", &PostParams::default(), &cur).await?;
    assert_eq!(replaced.data.clone().unwrap_or_default().len(), 1);

    // A no-op write keeps the resourceVersion.
    let again = cms.replace("a", &PostParams::default(), &replaced).await?;
    assert_eq!(
        again.metadata.resource_version,
        replaced.metadata.resource_version
    );

    // List with limit follows continue tokens.
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("l{i}"), "v")?)
            .await?;
    }
    let page = cms.list(&ListParams::default().limit(3)).await?;
    assert_eq!(page.items.len(), 3);
    assert!(page.metadata.continue_.is_some());
    assert_eq!(page.metadata.remaining_item_count, Some(4));
    let all = cms.list(&ListParams::default()).await?;
    assert_eq!(all.items.len(), 7);
    let labelled = cms
        .list(&ListParams::default().labels("app=t,!missing"))
        .await?;
    assert_eq!(labelled.items.len(), 6, "b has no app label");

    // Pods: status subresource, generation, field selectors, binding via patch of nodeName.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("p1", json!({"app": "web"}))?)
        .await?;
    assert_eq!(p.metadata.generation, Some(1));
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    let st = pods
        .patch_status(
            "p1",
            &pp,
            &Patch::Merge(
                json!({"status": {"phase": "Running", "podIP": "10.244.0.5"},
                                                      "spec": {"nodeName": "ignored"}}),
            ),
        )
        .await?;
    assert_eq!(
        st.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.244.0.5")
    );
    assert_eq!(
        st.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        None,
        "status writes ignore spec"
    );
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status writes keep generation"
    );
    let unscheduled = pods
        .list(&ListParams::default().fields("spec.nodeName="))
        .await?;
    assert_eq!(unscheduled.items.len(), 1);
    let e = pods
        .list(&ListParams::default().fields("metadata.labels.app=x"))
        .await
        .err();
    assert_eq!(e.as_ref().and_then(status_code), Some(400));
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await?;
    assert_eq!(running.items.len(), 1);
    let e = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "empty"}, "spec": {"containers": []}}),
            )?,
        )
        .await
        .err();
    match e {
        Some(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert_eq!(
                s.message,
                "Pod \"empty\" is invalid: spec.containers: Required value"
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }

    // Services: ClusterIP from the range, the exact 422s.
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let k = svcs.get("kubernetes").await?;
    assert_eq!(
        k.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("10.96.0.1")
    );
    let svc = |name: &str, spec: serde_json::Value| -> Result<Service, serde_json::Error> {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
    };
    let s1 = svcs
        .create(
            &PostParams::default(),
            &svc("s1", json!({"ports": [{"port": 80}]}))?,
        )
        .await?;
    let ip = s1
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_default();
    assert!(ip.starts_with("10.96."), "{ip}");
    let e = svcs
        .create(
            &PostParams::default(),
            &svc(
                "taken",
                json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}),
            )?,
        )
        .await
        .err();
    match e {
        Some(kube::Error::Api(s)) => assert_eq!(
            s.message,
            "Service \"taken\" is invalid: spec.clusterIPs: Invalid value: [\"10.96.0.1\"]: failed to allocate IP 10.96.0.1: provided IP is already allocated"
        ),
        other => panic!("expected 422, got {other:?}"),
    }
    let np = svcs
        .create(
            &PostParams::default(),
            &svc(
                "np",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            )?,
        )
        .await?;
    assert_eq!(
        np.spec
            .and_then(|s| s.ports)
            .and_then(|p| p.first().and_then(|p| p.node_port)),
        Some(30080)
    );
    let e = svcs
        .create(
            &PostParams::default(),
            &svc(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            )?,
        )
        .await
        .err();
    assert_eq!(e.as_ref().and_then(status_code), Some(422));
    let e = svcs
        .patch(
            "s1",
            &pp,
            &Patch::Merge(json!({"spec": {"clusterIP": "10.96.200.201"}})),
        )
        .await
        .err();
    assert_eq!(e.as_ref().and_then(status_code), Some(422));
    let changed = svcs
        .patch(
            "s1",
            &pp,
            &Patch::Merge(json!({"spec": {"type": "NodePort"}})),
        )
        .await?;
    let spec = changed.spec.unwrap_or_default();
    assert_eq!(spec.cluster_ip.as_deref(), Some(ip.as_str()));
    let port = spec
        .ports
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .unwrap_or(0);
    assert!((30000..=32767).contains(&port), "{port}");

    // Deleting a namespace: Terminating, then its contents and itself go; creates → 403 meanwhile.
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "gone"}}))?,
        )
        .await?;
    assert_eq!(
        ns.labels()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("gone")
    );
    let gone_cms: Api<ConfigMap> = Api::namespaced(c.clone(), "gone");
    gone_cms
        .create(&PostParams::default(), &cm("c", "1")?)
        .await?;
    let del = nss.delete("gone", &DeleteParams::background()).await?;
    let terminating = del.left().and_then(|n| n.status).and_then(|s| s.phase);
    assert_eq!(terminating.as_deref(), Some("Terminating"));
    let mut waited = 0;
    while nss.get_opt("gone").await?.is_some() {
        waited += 1;
        assert!(waited < 100, "namespace never went away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone_cms.get_opt("c").await?.is_none());
    let e = Api::<ConfigMap>::namespaced(c.clone(), "nope")
        .create(&PostParams::default(), &cm("x", "1")?)
        .await
        .err();
    assert_eq!(e.as_ref().and_then(status_code), Some(404));

    // Delete answers and then 404.
    cms.delete("a", &DeleteParams::default()).await?;
    let e = cms.get("a").await.err();
    assert_eq!(e.as_ref().and_then(status_code), Some(404));

    // kube-rs discovery of everything served, including the CRD-like rows.
    let disc = kube::discovery::Discovery::new(c.clone()).run().await?;
    let groups: Vec<String> = disc.groups().map(|g| g.name().to_string()).collect();
    for g in [
        "",
        "discovery.k8s.io",
        "networking.k8s.io",
        "coordination.k8s.io",
        "k8s.ovn.org",
        "policy.networking.k8s.io",
        "k8s.cni.cncf.io",
    ] {
        assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
    }
    // Aggregated discovery (v2) gives the same groups in two requests.
    let agg = kube::discovery::Discovery::new(c.clone())
        .run_aggregated()
        .await?;
    let agg_groups: Vec<String> = agg.groups().map(|g| g.name().to_string()).collect();
    assert_eq!(
        agg_groups.len(),
        groups.len(),
        "{agg_groups:?} vs {groups:?}"
    );
    let (ar, caps) = agg
        .get("k8s.ovn.org")
        .and_then(|g| g.recommended_kind("EgressIP"))
        .ok_or("EgressIP missing from aggregated discovery")?;
    assert_eq!(ar.plural, "egressips");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    let v = c.apiserver_version().await?;
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "32"));
    server.shutdown().await;
    Ok(())
}

type PodEvents = futures::stream::BoxStream<'static, Result<watcher::Event<Pod>, watcher::Error>>;

async fn next(
    stream: &mut PodEvents,
) -> Result<Result<Option<watcher::Event<Pod>>, watcher::Error>, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await
}

/// Collects watch events until `n` arrived or the time is up.
async fn take_events<S, K>(stream: S, n: usize) -> Vec<WatchEvent<K>>
where
    S: futures::Stream<Item = Result<WatchEvent<K>, kube::Error>>,
{
    let s = stream.take(n);
    tokio::time::timeout(
        Duration::from_secs(10),
        s.filter_map(|e| async move { e.ok() }).collect::<Vec<_>>(),
    )
    .await
    .unwrap_or_default()
}

fn names<K: kube::Resource>(events: &[WatchEvent<K>]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.meta().name.clone().unwrap_or_default()),
            WatchEvent::Modified(o) => {
                format!("MODIFIED {}", o.meta().name.clone().unwrap_or_default())
            }
            WatchEvent::Deleted(o) => {
                format!("DELETED {}", o.meta().name.clone().unwrap_or_default())
            }
            WatchEvent::Bookmark(_) => "BOOKMARK".into(),
            WatchEvent::Error(s) => format!("ERROR {}", s.code),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_resume_across_restart_and_410() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.event_window = 50;
    let server = start(cfg.clone()).await?;
    let c = client(&server).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let list = pods.list(&ListParams::default()).await?;
    let rv0 = list.metadata.resource_version.clone().unwrap_or_default();

    // A labelled watch sees ADDED when an object starts matching and DELETED when it stops.
    let filtered = pods
        .watch(&WatchParams::default().labels("app=web"), &rv0)
        .await?;
    pods.create(&PostParams::default(), &pod("w1", json!({"app": "web"}))?)
        .await?;
    pods.create(&PostParams::default(), &pod("w2", json!({"app": "db"}))?)
        .await?;
    let pp = PatchParams::default();
    pods.patch(
        "w2",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await?;
    pods.patch(
        "w1",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await?;
    pods.delete("w2", &DeleteParams::default()).await?;
    let ev = take_events(filtered.boxed(), 4).await;
    assert_eq!(
        names(&ev),
        ["ADDED w1", "ADDED w2", "DELETED w1", "DELETED w2"]
    );

    // Resume across a restart: events written before the restart come from the stored window.
    let rv_mid = pods
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    pods.create(&PostParams::default(), &pod("r1", json!({}))?)
        .await?;
    pods.create(&PostParams::default(), &pod("r2", json!({}))?)
        .await?;
    server.shutdown().await;
    let server = start(cfg.clone()).await?;
    let c = client(&server).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let resumed = pods.watch(&WatchParams::default(), &rv_mid).await?;
    pods.create(&PostParams::default(), &pod("r3", json!({}))?)
        .await?;
    let ev = take_events(resumed.boxed(), 3).await;
    assert_eq!(names(&ev), ["ADDED r1", "ADDED r2", "ADDED r3"]);
    let r3 = pods.get("r3").await?;
    let rv3: u64 = r3
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()?;
    assert!(
        rv3 > rv_mid.parse::<u64>()?,
        "the RV counter survives restarts"
    );

    // Older than the window (50 events): an ERROR event with 410.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for i in 0..60 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), "v")?)
            .await?;
    }
    let old = pods.watch(&WatchParams::default(), "1").await?;
    let ev = take_events(old.boxed(), 1).await;
    assert_eq!(names(&ev), ["ERROR 410"]);
    // timeoutSeconds ends the stream cleanly, with a BOOKMARK just before when allowed.
    let now_rv = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let short = pods
        .watch(&WatchParams::default().timeout(1), &now_rv)
        .await?;
    let started = std::time::Instant::now();
    let ev = take_events(short.boxed(), 10).await;
    assert_eq!(names(&ev), ["BOOKMARK"]);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A resourceVersion from the future: ERROR 504 after kube-apiserver's ~3 s wait. (A list
    // answers HTTP 504, which kube-rs retries with backoff for minutes: not tested here.)
    let future = pods.watch(&WatchParams::default(), "999999").await?;
    let ev = take_events(future.boxed(), 1).await;
    assert_eq!(names(&ev), ["ERROR 504"]);
    // sendInitialEvents is refused, not ignored.
    let e = pods.watch(&WatchParams::streaming_lists(), "").await.err();
    assert_eq!(e.as_ref().and_then(status_code), Some(422));
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_watcher_relists_after_410() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.event_window = 5;
    // No bookmarks, so the watcher's RV stays at its list RV while other objects change.
    cfg.bookmark_interval = Duration::from_secs(3600);
    let server = start(cfg.clone()).await?;
    cfg.listen = server.local_addr();
    let c = client(&server).await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    pods.create(&PostParams::default(), &pod("seen", json!({"app": "web"}))?)
        .await?;

    let wc = watcher::Config::default().labels("app=web");
    let mut stream: PodEvents = watcher(pods.clone(), wc).boxed();
    let mut inits = 0;
    let mut applied: Vec<String> = Vec::new();
    // First list.
    loop {
        match next(&mut stream).await?? {
            Some(watcher::Event::Init) => inits += 1,
            Some(watcher::Event::InitDone) => break,
            _ => {}
        }
    }
    // Unrelated writes push the window past the watcher's RV; then restart the server (same
    // port and data) so the watcher must re-watch from its old RV, get 410, and re-list.
    for i in 0..20 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), "v")?)
            .await?;
    }
    server.shutdown().await;
    let server = start(cfg.clone()).await?;
    let c2 = client(&server).await?;
    Api::<Pod>::namespaced(c2.clone(), "default")
        .create(
            &PostParams::default(),
            &pod("after", json!({"app": "web"}))?,
        )
        .await?;
    while !applied.iter().any(|n| n == "after") {
        match next(&mut stream).await {
            Ok(Ok(Some(watcher::Event::Init))) => inits += 1,
            Ok(Ok(Some(watcher::Event::InitApply(p)))) | Ok(Ok(Some(watcher::Event::Apply(p)))) => {
                applied.push(p.metadata.name.unwrap_or_default())
            }
            Ok(Ok(_)) => {}
            // Connection errors while the server restarts: the watcher retries by itself.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => panic!("watcher did not recover; saw {applied:?}"),
        }
    }
    assert!(
        inits >= 2,
        "a 410 must make the watcher re-list (Init events: {inits})"
    );
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_services() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut cfg = config(dir.path());
    cfg.service_cidrs = vec!["10.96.0.0/16".parse()?, "fd00:10:96::/112".parse()?];
    let server = start(cfg).await?;
    let c = client(&server).await?;
    let svcs: Api<Service> = Api::namespaced(c, "default");
    let k = svcs.get("kubernetes").await?.spec.unwrap_or_default();
    assert_eq!(
        k.cluster_ips,
        Some(vec!["10.96.0.1".to_string(), "fd00:10:96::1".to_string()])
    );
    let mk = |name: &str, spec: serde_json::Value| -> Result<Service, serde_json::Error> {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
    };
    let pp = PostParams::default();
    let single = svcs
        .create(&pp, &mk("single", json!({"ports": [{"port": 80}]}))?)
        .await?;
    let s = single.spec.unwrap_or_default();
    assert_eq!(s.ip_families, Some(vec!["IPv4".to_string()]));
    assert_eq!(s.cluster_ips.map(|v| v.len()), Some(1));
    let dual = svcs
        .create(
            &pp,
            &mk(
                "dual",
                json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}),
            )?,
        )
        .await?;
    let d = dual.spec.unwrap_or_default();
    assert_eq!(
        d.ip_families,
        Some(vec!["IPv4".to_string(), "IPv6".to_string()])
    );
    let ips = d.cluster_ips.unwrap_or_default();
    assert_eq!(ips.len(), 2);
    assert!(ips[1].parse::<std::net::Ipv6Addr>().is_ok(), "{ips:?}");
    let v6 = svcs
        .create(
            &pp,
            &mk(
                "v6",
                json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            )?,
        )
        .await?;
    let v = v6.spec.unwrap_or_default();
    assert!(v.cluster_ip.unwrap_or_default().starts_with("fd00:10:96::"));
    server.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_lists_stream_and_page() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let c = client(&server).await?;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let n = 700;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let cms = cms.clone();
            tokio::spawn(async move {
                for i in (t..n).step_by(8) {
                    let obj = cm(&format!("big-{i:04}"), "v").map_err(|e| e.to_string())?;
                    cms.create(&PostParams::default(), &obj)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    // One answer larger than a streamed chunk (256 items): every item, in key order.
    let all = cms.list(&ListParams::default()).await?;
    let names: Vec<String> = all
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    let want: Vec<String> = (0..n).map(|i| format!("big-{i:04}")).collect();
    assert_eq!(names, want);
    // Pages of 300 with continue tokens cover the same set once.
    let mut paged = Vec::new();
    let mut lp = ListParams::default().limit(300);
    loop {
        let page = cms.list(&lp).await?;
        paged.extend(page.items.iter().filter_map(|o| o.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(paged, want);
    server.shutdown().await;
    Ok(())
}
