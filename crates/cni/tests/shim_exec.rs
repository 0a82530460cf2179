//! The real `ovn-k8s-cni-overlay` binary, exec'd against a fake node agent
//! served with `ovnk_cni::serve` on a temporary socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovnk_cni::{
    bind_root_socket, serve, serve_with, Attachment, CniError, CniHandler, CniRequest, CniResult,
    Command, ErrorCode, Interface, IpConfig, Route, ServerOptions,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::sync::Barrier;

/// Upper bound for any single exec: the shim must never hang.
const EXEC_BOUND: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(Command, String, Option<String>)>>,
    add_delay: Option<Duration>,
    /// When set, ADD waits here (proves requests run concurrently).
    barrier: Option<Arc<Barrier>>,
    status_error: Option<CniError>,
    gc_seen: Mutex<Option<Vec<Attachment>>>,
}

impl Fake {
    fn record(&self, req: &CniRequest) {
        if let Ok(mut c) = self.calls.lock() {
            c.push((req.command, req.container_id.clone(), req.pod_key()));
        }
    }
    fn calls(&self) -> Vec<(Command, String, Option<String>)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

fn pod_result(req: &CniRequest) -> CniResult {
    CniResult {
        interfaces: vec![
            Interface {
                name: format!("{}_h", &req.container_id[..req.container_id.len().min(12)]),
                mac: Some("aa:bb:cc:00:00:01".into()),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: req.ifname.clone(),
                mac: Some("0a:58:0a:f4:01:03".into()),
                mtu: Some(1400),
                sandbox: req.netns.as_ref().map(|p| p.display().to_string()),
            },
        ],
        ips: vec![IpConfig {
            address: "10.244.1.3/24".parse().unwrap(),
            gateway: Some("10.244.1.1".parse().unwrap()),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: "10.96.0.0/16".parse().unwrap(),
            gw: Some("10.244.1.1".parse().unwrap()),
            mtu: None,
        }],
        dns: Default::default(),
    }
}

impl CniHandler for Fake {
    async fn add(&self, req: CniRequest) -> Result<CniResult, CniError> {
        self.record(&req);
        if let Some(d) = self.add_delay {
            tokio::time::sleep(d).await;
        }
        if let Some(b) = &self.barrier {
            b.wait().await;
        }
        if req.container_id == "unknown" {
            return Err(
                CniError::new(ErrorCode::UnknownContainer, "no such sandbox")
                    .with_details("pod gone"),
            );
        }
        Ok(pod_result(&req))
    }
    async fn del(&self, req: CniRequest) -> Result<(), CniError> {
        self.record(&req);
        Ok(())
    }
    async fn check(&self, req: CniRequest) -> Result<(), CniError> {
        self.record(&req);
        Ok(())
    }
    async fn status(&self, req: CniRequest) -> Result<(), CniError> {
        self.record(&req);
        match &self.status_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
    async fn gc(&self, req: CniRequest) -> Result<(), CniError> {
        self.record(&req);
        if let Ok(mut g) = self.gc_seen.lock() {
            *g = req.config.valid_attachments.clone();
        }
        Ok(())
    }
}

struct Agent {
    _dir: TempDir,
    sock: PathBuf,
    fake: Arc<Fake>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(fake: Fake) -> Agent {
    start_with(fake, ServerOptions::default()).await
}

async fn start_with(fake: Fake, opts: ServerOptions) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/cni/ovn-cni-server.sock");
    let listener = bind_root_socket(&sock).unwrap();
    let fake = Arc::new(fake);
    let task = tokio::spawn(serve_with(listener, fake.clone(), opts));
    Agent {
        _dir: dir,
        sock,
        fake,
        task,
    }
}

fn conf(version: &str, sock: &Path, extra: Value) -> String {
    let mut c = json!({
        "cniVersion": version,
        "name": "ovn-kubernetes",
        "type": "ovn-k8s-cni-overlay",
        "serverSocket": sock.display().to_string(),
    });
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    c.to_string()
}

fn pod_env(command: &str) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "3f4e5d6c7b8a"),
        ("CNI_NETNS", "/var/run/netns/cni-1234"),
        ("CNI_IFNAME", "eth0"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=0c6f",
        ),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn without(mut env: Vec<(String, String)>, key: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env
}

fn with(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
    env
}

struct Exec {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Exec {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
    /// Asserts a spec error object with `code` whose msg contains `msg`.
    fn assert_error(&self, code: u32, msg: &str) {
        assert_ne!(self.code, 0, "expected failure, stdout {:?}", self.stdout);
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert!(v["cniVersion"].is_string(), "{v}");
        let text = format!(
            "{} {}",
            v["msg"].as_str().unwrap_or(""),
            v["details"].as_str().unwrap_or("")
        );
        assert!(text.contains(msg), "expected {msg:?} in {v}");
    }
}

async fn exec(env: &[(String, String)], stdin: &str) -> Exec {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ovn-k8s-cni-overlay"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin_pipe = child.stdin.take().unwrap();
    stdin_pipe.write_all(stdin.as_bytes()).await.unwrap();
    drop(stdin_pipe);
    let out = tokio::time::timeout(EXEC_BOUND, child.wait_with_output())
        .await
        .expect("the shim hung")
        .unwrap();
    Exec {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn add_renders_each_version() {
    let agent = start(Fake::default()).await;
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let out = exec(&pod_env("ADD"), &conf(version, &agent.sock, json!({}))).await;
        assert_eq!(out.code, 0, "{version}: {} / {}", out.stdout, out.stderr);
        let v = out.json();
        assert_eq!(v["cniVersion"], version);
        assert_eq!(v["ips"][0]["address"], "10.244.1.3/24");
        assert_eq!(v["ips"][0]["gateway"], "10.244.1.1");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(
            v["ips"][0].get("version").is_some(),
            version == "0.4.0",
            "{v}"
        );
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/cni-1234");
        assert_eq!(
            v["interfaces"][1].get("mtu").is_some(),
            version == "1.1.0",
            "{v}"
        );
        assert_eq!(v["routes"][0]["dst"], "10.96.0.0/16");
    }
    let calls = agent.fake.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        calls[0],
        (
            Command::Add,
            "3f4e5d6c7b8a".into(),
            Some("default/web-0".into())
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn add_with_prev_result_chains_it() {
    let agent = start(Fake::default()).await;
    let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"lo"}],"ips":[{"address":"127.0.0.1/8","interface":0}]});
    let out = exec(
        &pod_env("ADD"),
        &conf("1.0.0", &agent.sock, json!({"prevResult": prev})),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["interfaces"][0]["name"], "lo");
    assert_eq!(v["ips"][0]["address"], "127.0.0.1/8");
    // Our address points at our container interface, shifted past "lo".
    assert_eq!(v["ips"][1]["interface"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn del_check_status_gc_happy_paths() {
    let agent = start(Fake::default()).await;
    let del = exec(&pod_env("DEL"), &conf("1.0.0", &agent.sock, json!({}))).await;
    assert_eq!((del.code, del.stdout.as_str()), (0, ""), "{}", del.stderr);
    // DEL without netns (the sandbox is already gone) is valid.
    let del2 = exec(
        &without(pod_env("DEL"), "CNI_NETNS"),
        &conf("1.0.0", &agent.sock, json!({})),
    )
    .await;
    assert_eq!(del2.code, 0, "{}", del2.stdout);

    let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/cni-1234"}],
                      "ips":[{"address":"10.244.1.3/24","interface":0}]});
    let check = exec(
        &pod_env("CHECK"),
        &conf("1.0.0", &agent.sock, json!({"prevResult": prev})),
    )
    .await;
    assert_eq!(
        (check.code, check.stdout.as_str()),
        (0, ""),
        "{}",
        check.stdout
    );

    let status_env = vec![("CNI_COMMAND".to_string(), "STATUS".to_string())];
    let status = exec(&status_env, &conf("1.1.0", &agent.sock, json!({}))).await;
    assert_eq!(
        (status.code, status.stdout.as_str()),
        (0, ""),
        "{}",
        status.stdout
    );

    let gc_env = vec![
        ("CNI_COMMAND".to_string(), "GC".to_string()),
        ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
    ];
    let attachments =
        json!([{"containerID":"aaa","ifname":"eth0"},{"containerID":"bbb","ifname":"eth0"}]);
    let gc = exec(
        &gc_env,
        &conf(
            "1.1.0",
            &agent.sock,
            json!({"cni.dev/valid-attachments": attachments}),
        ),
    )
    .await;
    assert_eq!((gc.code, gc.stdout.as_str()), (0, ""), "{}", gc.stdout);
    let seen = agent.fake.gc_seen.lock().unwrap().clone().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].container_id, "bbb");

    let commands: Vec<Command> = agent.fake.calls().into_iter().map(|c| c.0).collect();
    assert_eq!(
        commands,
        [
            Command::Del,
            Command::Del,
            Command::Check,
            Command::Status,
            Command::Gc
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn version_needs_no_agent() {
    let out = exec(&[("CNI_COMMAND".into(), "VERSION".into())], "").await;
    assert_eq!(out.code, 0);
    let v = out.json();
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_code() {
    let agent = start(Fake::default()).await;
    let good = conf("1.0.0", &agent.sock, json!({}));
    exec(&without(pod_env("ADD"), "CNI_COMMAND"), &good)
        .await
        .assert_error(4, "CNI_COMMAND is not set");
    exec(&with(pod_env("ADD"), "CNI_COMMAND", "MAKE"), &good)
        .await
        .assert_error(4, "unknown CNI_COMMAND");
    exec(&without(pod_env("ADD"), "CNI_NETNS"), &good)
        .await
        .assert_error(4, "CNI_NETNS");
    exec(&without(pod_env("ADD"), "CNI_CONTAINERID"), &good)
        .await
        .assert_error(4, "CNI_CONTAINERID");
    exec(&without(pod_env("ADD"), "CNI_IFNAME"), &good)
        .await
        .assert_error(4, "CNI_IFNAME");
    exec(&with(pod_env("ADD"), "CNI_ARGS", "K8S_POD_NAME=x"), &good)
        .await
        .assert_error(4, "K8S_POD_NAMESPACE");
    exec(&pod_env("ADD"), "{not json")
        .await
        .assert_error(6, "not valid JSON");
    exec(&pod_env("ADD"), "")
        .await
        .assert_error(6, "not valid JSON");
    let old = conf("0.3.1", &agent.sock, json!({}));
    let out = exec(&pod_env("ADD"), &old).await;
    out.assert_error(1, "unsupported cniVersion \"0.3.1\"");
    let no_type = json!({"cniVersion":"1.0.0","name":"n"}).to_string();
    exec(&pod_env("ADD"), &no_type)
        .await
        .assert_error(7, "type");
    exec(&pod_env("CHECK"), &good)
        .await
        .assert_error(7, "prevResult");
    let status_env = vec![("CNI_COMMAND".to_string(), "STATUS".to_string())];
    exec(&status_env, &good).await.assert_error(1, "1.1.0");
    // None of these reached the agent.
    assert!(agent.fake.calls().is_empty(), "{:?}", agent.fake.calls());
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_errors_pass_through() {
    let agent = start(Fake {
        status_error: Some(CniError::new(
            ErrorCode::PluginNotAvailable,
            "OVS not ready",
        )),
        ..Default::default()
    })
    .await;
    let env = with(pod_env("ADD"), "CNI_CONTAINERID", "unknown");
    let out = exec(&env, &conf("1.0.0", &agent.sock, json!({}))).await;
    out.assert_error(3, "no such sandbox");
    assert_eq!(out.json()["details"], "pod gone");
    assert_eq!(out.json()["cniVersion"], "1.0.0");
    let status_env = vec![("CNI_COMMAND".to_string(), "STATUS".to_string())];
    exec(&status_env, &conf("1.1.0", &agent.sock, json!({})))
        .await
        .assert_error(50, "OVS not ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn shim_times_out_instead_of_hanging() {
    // The handler takes far longer than the configured ADD timeout.
    let agent = start(Fake {
        add_delay: Some(Duration::from_secs(600)),
        ..Default::default()
    })
    .await;
    let out = exec(
        &pod_env("ADD"),
        &conf("1.0.0", &agent.sock, json!({"addTimeoutSeconds": 1})),
    )
    .await;
    // Either the agent's bound (0.9 s) or the shim's (1 s) fires; both are code 101.
    out.assert_error(101, "within");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_bounds_each_request() {
    let opts = ServerOptions {
        add_timeout: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
    };
    let agent = start_with(
        Fake {
            add_delay: Some(Duration::from_secs(600)),
            ..Default::default()
        },
        opts,
    )
    .await;
    let out = exec(&pod_env("ADD"), &conf("1.0.0", &agent.sock, json!({}))).await;
    out.assert_error(101, "node agent did not finish ADD default/web-0");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_run_concurrently() {
    // Each ADD waits until two are inside the handler at once: a serial
    // server would deadlock (and the exec bound would fail the test).
    let agent = start(Fake {
        barrier: Some(Arc::new(Barrier::new(2))),
        ..Default::default()
    })
    .await;
    let c = conf("1.0.0", &agent.sock, json!({}));
    let env2 = with(pod_env("ADD"), "CNI_CONTAINERID", "second");
    let env1 = pod_env("ADD");
    let (a, b) = tokio::join!(exec(&env1, &c), exec(&env2, &c));
    assert_eq!((a.code, b.code), (0, 0), "{} / {}", a.stdout, b.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let c = conf("1.1.0", &sock, json!({}));
    let out = exec(&pod_env("ADD"), &c).await;
    out.assert_error(100, "does not exist");
    assert!(out.stdout.contains("absent.sock"), "{}", out.stdout);
    let status_env = vec![("CNI_COMMAND".to_string(), "STATUS".to_string())];
    exec(&status_env, &c)
        .await
        .assert_error(50, "not available");
    // DEL succeeds: nothing can be torn down, the agent cleans up at start.
    let del = exec(&pod_env("DEL"), &c).await;
    assert_eq!(del.code, 0, "{}", del.stdout);
    assert!(del.stderr.contains("absent"), "{}", del.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_socket_stale() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cni/stale.sock");
    // A socket file that nobody listens on (agent crashed / restarting).
    drop(bind_root_socket(&sock).unwrap());
    let c = conf("1.0.0", &sock, json!({}));
    exec(&pod_env("ADD"), &c)
        .await
        .assert_error(100, "cannot connect");
    // DEL must be retried later, not reported as done.
    exec(&pod_env("DEL"), &c).await.assert_error(11, "retry");
}

#[tokio::test(flavor = "multi_thread")]
async fn root_socket_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a/b/ovn-cni-server.sock");
    let l = bind_root_socket(&sock).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    // No temporary file is left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
        1
    );
    // A stale socket is replaced, and the new one serves.
    drop(l);
    let l2 = bind_root_socket(&sock).unwrap();
    let task = tokio::spawn(serve(l2, Arc::new(Fake::default())));
    let out = exec(&pod_env("DEL"), &conf("1.0.0", &sock, json!({}))).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    task.abort();
    // Anything that is not a socket is left alone.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    assert!(bind_root_socket(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_rejects_bad_wire_requests() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let agent = start(Fake::default()).await;
    let send = |path: &'static str, body: &'static str| {
        let sock = agent.sock.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::post(path)
                .header("host", "x")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = tx.send_request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (status, v) = send("/other", "{}").await;
    assert_eq!((status, v["code"].as_u64()), (404, Some(102)));
    let (status, v) = send("/cni", "garbage").await;
    assert_eq!((status, v["code"].as_u64()), (400, Some(6)));
    let (status, v) = send(
        "/cni",
        r#"{"env":{"CNI_COMMAND":"ADD"},"config":{"cniVersion":"1.0.0","name":"n","type":"t"}}"#,
    )
    .await;
    assert_eq!((status, v["code"].as_u64()), (400, Some(4)));
    assert!(agent.fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_closing_the_connection() {
    // Accepts and hangs up at once, like an agent crashing mid-request.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cni/crashy.sock");
    let listener = bind_root_socket(&sock).unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let c = conf("1.0.0", &sock, json!({}));
    exec(&pod_env("ADD"), &c)
        .await
        .assert_error(102, "protocol error");
    exec(&pod_env("DEL"), &c)
        .await
        .assert_error(11, "retry DEL later");
    let status_env = vec![("CNI_COMMAND".to_string(), "STATUS".to_string())];
    let c11 = conf("1.1.0", &sock, json!({}));
    exec(&status_env, &c11)
        .await
        .assert_error(50, "not available");
    task.abort();
}
