//! The supervisor with real child processes.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU32, Ordering};

use ovnk_lab::daemon::{
    process_matches, stop_by_pidfile, AfterStart, DaemonEvent, DaemonSpec, Supervisor,
};

async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<DaemonEvent>) -> DaemonEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no supervisor event within 10 s")
        .expect("event channel closed")
}

/// Waits (bounded) until the log holds exactly `want`.
async fn wait_for_log(path: &std::path::Path, want: &str) {
    let mut log = String::new();
    for _ in 0..1000 {
        log = std::fs::read_to_string(path).unwrap_or_default();
        if log == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("log {} is {log:?}, expected {want:?}", path.display());
}

#[tokio::test]
async fn restarts_a_dead_daemon_and_stops_by_pid() {
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new();
    let mut events = sup.subscribe();
    let spec = DaemonSpec::new(
        "t/sleeper",
        "/bin/sh",
        dir.path().join("sleeper.log"),
        dir.path().join("sleeper.pid"),
    )
    .args(["-c", "echo up; exec sleep 300"]);
    // The after-start hook runs on the first start and again on every restart.
    let starts = Arc::new(AtomicU32::new(0));
    let counted = starts.clone();
    let spec = spec.after_start(AfterStart::new(move || {
        let c = counted.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }));
    let pid = sup.start(spec).await.unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The pidfile records the pid and the program, so a later cleanup can check both.
    let recorded = std::fs::read_to_string(dir.path().join("sleeper.pid")).unwrap();
    assert_eq!(recorded, format!("{pid}\n/bin/sh\n"));
    assert!(matches!(
        next_event(&mut events).await,
        DaemonEvent::Started { .. }
    ));

    // Killed from outside (once it has logged): reported, then restarted with a new pid.
    wait_for_log(&dir.path().join("sleeper.log"), "up\n").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    match next_event(&mut events).await {
        DaemonEvent::Exited {
            name,
            pid: p,
            status,
        } => {
            assert_eq!(name, "t/sleeper");
            assert_eq!(p, pid);
            assert!(status.contains("signal: 9"), "{status}");
        }
        e => panic!("expected Exited, got {e:?}"),
    }
    assert!(matches!(
        next_event(&mut events).await,
        DaemonEvent::Restarting { .. }
    ));
    let new_pid = match next_event(&mut events).await {
        DaemonEvent::Started { pid, .. } => pid,
        e => panic!("expected Started, got {e:?}"),
    };
    assert_ne!(new_pid, pid);
    let st = sup.status();
    assert_eq!(st.len(), 1);
    assert!(st[0].up);
    assert_eq!(st[0].restarts, 1);
    assert_eq!(st[0].pid, Some(new_pid));
    // Both runs append to the same log.
    wait_for_log(&dir.path().join("sleeper.log"), "up\nup\n").await;
    for _ in 0..500 {
        if starts.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(starts.load(Ordering::SeqCst), 2, "after-start hook runs");

    sup.stop("t/sleeper").await;
    assert!(!process_matches(new_pid as i32, "sleep"));
    assert!(!dir.path().join("sleeper.pid").exists());
    assert!(sup.status().is_empty());
}

#[tokio::test]
async fn stale_pidfile_never_kills_an_unrelated_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    // spawn() may return before the child has exec'd: wait (bounded) until it is `sleep`.
    for _ in 0..500 {
        if process_matches(other.id() as i32, "sleep") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pidfile = dir.path().join("x.pid");
    std::fs::write(&pidfile, format!("{}\n", other.id())).unwrap();
    // The pidfile claims ovsdb-server, but the pid runs sleep: leave it alone.
    assert!(!stop_by_pidfile(&pidfile, "ovsdb-server").unwrap());
    assert!(process_matches(other.id() as i32, "sleep"));
    std::fs::write(&pidfile, format!("{}\n", other.id())).unwrap();
    assert!(stop_by_pidfile(&pidfile, "sleep").unwrap());
    let status = other.wait().unwrap();
    assert!(!status.success());
    // Garbage in a pidfile is not an error.
    std::fs::write(&pidfile, "not-a-pid").unwrap();
    assert!(!stop_by_pidfile(&pidfile, "sleep").unwrap());
}

#[tokio::test]
async fn daemon_in_a_namespace_sees_only_its_devices() {
    if !nix::unistd::Uid::effective().is_root() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true: needs root"
        );
        eprintln!("SKIP: needs root");
        return;
    }
    let name = format!("ovnkt-{}-sup", std::process::id());
    let _ = ovnk_netns::delete_named(&name);
    let ns = Arc::new(ovnk_netns::create_named(&name).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sup = Supervisor::new();
    let mut events = sup.subscribe();
    let mut spec = DaemonSpec::new(
        "t/ns",
        "/bin/sh",
        dir.path().join("ns.log"),
        dir.path().join("ns.pid"),
    )
    .args(["-c", "ls /sys/class/net; echo ENV=$LABVAR"])
    .env("LABVAR", "x1")
    .in_netns(ns);
    spec.restart = false;
    sup.start(spec).await.unwrap();
    let _ = next_event(&mut events).await;
    assert!(matches!(
        next_event(&mut events).await,
        DaemonEvent::Exited { .. }
    ));
    let log = std::fs::read_to_string(dir.path().join("ns.log")).unwrap();
    ovnk_netns::delete_named(&name).unwrap();
    assert_eq!(log, "lo\nENV=x1\n");
}
