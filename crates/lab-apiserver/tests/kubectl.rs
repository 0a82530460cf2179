//! The stock kubectl driving the lab API server through the written kubeconfig.

mod common;

use common::{config, in_ci, start, TestResult};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

fn kubectl_path() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    })
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .args(args)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Result<Out, Box<dyn std::error::Error + Send + Sync>> {
        let out =
            tokio::time::timeout(Duration::from_secs(60), self.command(args).output()).await??;
        Ok(Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs and requires success; returns stdout.
    async fn ok(&self, args: &[&str]) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let o = self.run(args).await?;
        if !o.ok {
            return Err(format!("kubectl {args:?} failed: {}{}", o.stdout, o.stderr).into());
        }
        Ok(o.stdout)
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String, std::io::Error> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_end_to_end() -> TestResult {
    let Some(bin) = kubectl_path() else {
        assert!(!in_ci(), "kubectl is required when CI=true");
        eprintln!("skipping: kubectl not found in PATH");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = start(config(dir.path())).await?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;
    let k = Kubectl {
        bin,
        kubeconfig: server.kubeconfig_path().to_path_buf(),
        home,
    };

    let ns = k.ok(&["get", "ns"]).await?;
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "{ns}");
    }

    let pod = write(
        dir.path(),
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  labels: {app: web}\nspec:\n  containers:\n  - name: c\n    image: nginx:1.25\n",
    )?;
    assert_eq!(
        k.ok(&["create", "-f", &pod]).await?.trim(),
        "pod/p1 created"
    );
    let again = k.run(&["create", "-f", &pod]).await?;
    assert!(
        !again.ok && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );

    let wide = k.ok(&["get", "pods", "-o", "wide"]).await?;
    let header = wide.lines().next().unwrap_or("");
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"] {
        assert!(header.contains(col), "{wide}");
    }
    assert!(
        wide.lines()
            .any(|l| l.starts_with("p1") && l.contains("0/1") && l.contains("Pending")),
        "{wide}"
    );

    let yaml = k.ok(&["get", "pod", "p1", "-o", "yaml"]).await?;
    assert!(
        yaml.contains("name: p1") && yaml.contains("uid:") && yaml.contains("image: nginx:1.25"),
        "{yaml}"
    );

    assert_eq!(
        k.ok(&["label", "pod", "p1", "env=x"]).await?.trim(),
        "pod/p1 labeled"
    );
    assert_eq!(
        k.ok(&["annotate", "pod", "p1", "note=hello"]).await?.trim(),
        "pod/p1 annotated"
    );
    assert_eq!(
        k.ok(&[
            "patch",
            "pod",
            "p1",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"m":"1"}}}"#
        ])
        .await?
        .trim(),
        "pod/p1 patched"
    );
    let labels = k
        .ok(&["get", "pod", "p1", "-o", "jsonpath={.metadata.labels}"])
        .await?;
    assert!(
        labels.contains(r#""env":"x""#) && labels.contains(r#""m":"1""#),
        "{labels}"
    );
    let note = k
        .ok(&[
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.metadata.annotations.note}",
        ])
        .await?;
    assert_eq!(note, "hello");

    // get -w sees a pod created while it watches.
    let mut watch = k
        .command(&["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = watch.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // The initial list arrives first: wait for p1's row so the watch is established.
    let seen_initial = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("p1") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(seen_initial);
    assert_eq!(
        k.ok(&["run", "x", "--image=y"]).await?.trim(),
        "pod/x created"
    );
    let seen_x = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.starts_with("x ") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    watch.kill().await?;
    assert!(seen_x, "kubectl get -w did not show the new pod");

    // apply twice with a changed manifest, then delete -f.
    let svc_text = |tier: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: s1\n  labels: {{tier: {tier}}}\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: 80\n    targetPort: 8080\n")
    };
    let svc = write(dir.path(), "svc.yaml", &svc_text("a"))?;
    assert_eq!(
        k.ok(&["apply", "-f", &svc]).await?.trim(),
        "service/s1 created"
    );
    write(dir.path(), "svc.yaml", &svc_text("b"))?;
    assert_eq!(
        k.ok(&["apply", "-f", &svc]).await?.trim(),
        "service/s1 configured"
    );
    let tier = k
        .ok(&["get", "svc", "s1", "-o", "jsonpath={.metadata.labels.tier}"])
        .await?;
    assert_eq!(tier, "b");
    let svcs = k.ok(&["get", "svc", "-o", "wide"]).await?;
    assert!(
        svcs.contains("CLUSTER-IP") && svcs.contains("80/TCP") && svcs.contains("app=web"),
        "{svcs}"
    );
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &svc]).await?.trim(),
        "service/s1 serverside-applied"
    );
    assert_eq!(
        k.ok(&["delete", "-f", &svc]).await?.trim(),
        "service \"s1\" deleted"
    );
    let gone = k.run(&["get", "svc", "s1"]).await?;
    assert!(
        !gone.ok && gone.stderr.contains("NotFound"),
        "{}",
        gone.stderr
    );

    // An ovnk CRD-like kind by its short name, and an EndpointSlice.
    let eip = write(
        dir.path(),
        "eip.yaml",
        "apiVersion: k8s.ovn.org/v1\nkind: EgressIP\nmetadata: {name: e1}\nspec: {egressIPs: [172.18.0.33]}\n",
    )?;
    assert_eq!(
        k.ok(&["apply", "-f", &eip]).await?.trim(),
        "egressip.k8s.ovn.org/e1 created"
    );
    assert!(k.ok(&["get", "eip"]).await?.contains("e1"));
    let eps = write(
        dir.path(),
        "eps.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s1-abc}\naddressType: IPv4\nendpoints: [{addresses: [10.244.0.5]}]\nports: [{port: 80, protocol: TCP}]\n",
    )?;
    assert_eq!(
        k.ok(&["create", "-f", &eps]).await?.trim(),
        "endpointslice.discovery.k8s.io/s1-abc created"
    );

    // Typed generators send protobuf: namespace, configmap, serviceaccount.
    assert_eq!(
        k.ok(&["create", "namespace", "gen"]).await?.trim(),
        "namespace/gen created"
    );
    assert_eq!(
        k.ok(&[
            "-n",
            "gen",
            "create",
            "configmap",
            "cm1",
            "--from-literal=a=b"
        ])
        .await?
        .trim(),
        "configmap/cm1 created"
    );
    let data = k
        .ok(&["-n", "gen", "get", "cm", "cm1", "-o", "jsonpath={.data.a}"])
        .await?;
    assert_eq!(data, "b");
    assert_eq!(
        k.ok(&["-n", "gen", "create", "serviceaccount", "sa1"])
            .await?
            .trim(),
        "serviceaccount/sa1 created"
    );

    // Namespaces: apply, use, delete (contents go with it).
    let ns = write(
        dir.path(),
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: lab}\n",
    )?;
    k.ok(&["apply", "-f", &ns]).await?;
    k.ok(&["-n", "lab", "apply", "-f", &pod]).await?;
    assert_eq!(
        k.ok(&["delete", "-f", &ns]).await?.trim(),
        "namespace \"lab\" deleted"
    );
    let left = k.ok(&["-n", "lab", "get", "pods", "-o", "name"]).await?;
    assert_eq!(left.trim(), "");
    assert!(!k
        .ok(&["get", "ns", "-o", "name"])
        .await?
        .contains("namespace/lab"));

    assert_eq!(
        k.ok(&["delete", "pod", "x"]).await?.trim(),
        "pod \"x\" deleted"
    );
    server.shutdown().await;
    Ok(())
}
