//! Racing writers, bad input, auth, and durability across kill -9 of the server binary.

mod common;

use common::{client, config, kube_config, start, status_code, TestResult};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;

fn cm(name: &str) -> Result<ConfigMap, serde_json::Error> {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"n": "0"}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_racing_update_wins() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let c = client(&server).await?;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let base = cms.create(&PostParams::default(), &cm("race")?).await?;
    for round in 0..5 {
        let current = cms.get("race").await?;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let cms = cms.clone();
                let mut obj = current.clone();
                obj.data = Some([("n".to_string(), format!("{round}-{i}"))].into());
                tokio::spawn(async move { cms.replace("race", &PostParams::default(), &obj).await })
            })
            .collect();
        let mut wins = 0;
        let mut conflicts = 0;
        for t in tasks {
            match t.await? {
                Ok(_) => wins += 1,
                Err(e) if status_code(&e) == Some(409) => conflicts += 1,
                Err(e) => return Err(e.into()),
            }
        }
        assert_eq!((wins, conflicts), (1, 15), "round {round}");
    }
    assert_ne!(
        cms.get("race").await?.metadata.resource_version,
        base.metadata.resource_version
    );
    server.shutdown().await;
    Ok(())
}

/// Sends a raw request through kube-rs' client (same TLS and token) and returns status + body.
async fn raw(
    c: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error + Send + Sync>> {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))?;
    let resp = c.send(req).await?;
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    Ok((
        code,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_and_the_server_keeps_serving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let c = client(&server).await?;
    let pods = "/api/v1/namespaces/default/pods";
    let cases: Vec<(&str, String, &str, Vec<u8>, u16)> = vec![
        (
            "POST",
            pods.into(),
            "application/json",
            br#"{"apiVersion":"v1","kind":"Pod"#.to_vec(),
            400,
        ),
        (
            "POST",
            pods.into(),
            "application/yaml",
            b"kind: [unclosed".to_vec(),
            400,
        ),
        (
            "POST",
            pods.into(),
            "application/json",
            b"[1,2]".to_vec(),
            400,
        ),
        (
            "POST",
            pods.into(),
            "application/json",
            br#"{"kind":"Service","metadata":{"name":"a"}}"#.to_vec(),
            400,
        ),
        (
            "POST",
            pods.into(),
            "application/json",
            br#"{"metadata":{}}"#.to_vec(),
            422,
        ),
        (
            "POST",
            pods.into(),
            "application/json",
            br#"{"metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#
                .to_vec(),
            422,
        ),
        (
            "POST",
            pods.into(),
            "application/json",
            br#"{"metadata":{"name":"n","namespace":"other"}}"#.to_vec(),
            400,
        ),
        (
            "POST",
            pods.into(),
            "application/json",
            vec![b' '; 4 * 1024 * 1024],
            413,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/widgets".into(),
            "application/json",
            b"{}".to_vec(),
            404,
        ),
        (
            "POST",
            format!("{pods}/p1"),
            "application/json",
            b"{}".to_vec(),
            405,
        ),
        ("GET", "/apis/nope.example/v1".into(), "", vec![], 404),
        (
            "GET",
            format!("{pods}?labelSelector=a%20in%20b"),
            "",
            vec![],
            400,
        ),
        (
            "GET",
            format!("{pods}?fieldSelector=spec.bogus%3Dx"),
            "",
            vec![],
            400,
        ),
        (
            "GET",
            format!("{pods}?resourceVersionMatch=Exact"),
            "",
            vec![],
            422,
        ),
        ("GET", format!("{pods}?continue=!!!"), "", vec![], 400),
        (
            "PATCH",
            "/api/v1/namespaces/default".into(),
            "application/json",
            b"{}".to_vec(),
            415,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default".into(),
            "application/merge-patch+json",
            b"{".to_vec(),
            400,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default".into(),
            "application/json-patch+json",
            br#"[{"op":"remove","path":"/nope"}]"#.to_vec(),
            422,
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default".into(),
            "application/json",
            vec![],
            403,
        ),
        (
            "DELETE",
            format!("{pods}/missing"),
            "application/json",
            vec![],
            404,
        ),
    ];
    for (method, path, ct, body, want) in cases {
        let (code, status) = raw(&c, method, &path, ct, body).await?;
        assert_eq!(code, want, "{method} {path}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {path}");
        assert_eq!(status["code"], want, "{method} {path}");
    }
    // Still serving.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.create(&PostParams::default(), &cm("after")?).await?;

    // No token: 401 Status; health is open.
    let mut anon = kube_config(server.kubeconfig_path()).await?;
    anon.auth_info = Default::default();
    let anon = Client::try_from(anon)?;
    let e = Api::<ConfigMap>::namespaced(anon.clone(), "default")
        .list(&ListParams::default())
        .await
        .err();
    assert_eq!(e.as_ref().and_then(status_code), Some(401));
    let req = http::Request::get("/healthz").body(Vec::new())?;
    assert_eq!(anon.request_text(req).await?, "ok");

    // Only loopback.
    let mut cfg = config(dir.path());
    cfg.listen = "0.0.0.0:0".parse()?;
    assert!(matches!(
        start(cfg).await,
        Err(lab_apiserver::Error::Config(_))
    ));
    server.shutdown().await;
    Ok(())
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        // Our own child, by pid.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn spawn_server(
    data: &std::path::Path,
    listen: &str,
) -> Result<(Child, String), Box<dyn std::error::Error + Send + Sync>> {
    let addr_file = data.with_extension("addr");
    let _ = std::fs::remove_file(&addr_file);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lab-apiserver"))
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg(listen)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let child = Child(child);
    for _ in 0..200 {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            return Ok((child, a));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("the server binary did not start".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (mut child, addr) = spawn_server(&data, "127.0.0.1:0").await?;
    let c = Client::try_from(kube_config(&data.join("kubeconfig")).await?)?;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    // Concurrent writers, so some commits are grouped.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let cms = cms.clone();
            tokio::spawn(async move { cms.create(&PostParams::default(), &cm(&format!("d{i}"))?).await.map_err(|e| e.to_string()).map(|_| ()).map_err(Into::into) })
        })
        .collect::<Vec<tokio::task::JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>>>();
    for t in tasks {
        t.await??;
    }
    let before = cms.list(&ListParams::default()).await?;
    let rv_before: u64 = before
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()?;
    // SIGKILL: no shutdown path runs.
    child.0.kill()?;
    child.0.wait()?;

    let (_child2, addr2) = spawn_server(&data, &addr).await?;
    assert_eq!(addr, addr2, "restarted on the same address");
    let c = Client::try_from(kube_config(&data.join("kubeconfig")).await?)?;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let after = cms.list(&ListParams::default()).await?;
    let names: std::collections::HashSet<String> = after
        .items
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    for i in 0..100 {
        assert!(names.contains(&format!("d{i}")), "d{i} lost");
    }
    let rv_after: u64 = after
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()?;
    assert!(
        rv_after >= rv_before,
        "RV went back: {rv_before} → {rv_after}"
    );
    let fresh = cms.create(&PostParams::default(), &cm("fresh")?).await?;
    let rv_fresh: u64 = fresh
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or("")
        .parse()?;
    assert!(rv_fresh > rv_before);
    Ok(())
}
