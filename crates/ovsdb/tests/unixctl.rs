//! The unixctl client against a real daemon's control socket, with `ovs-appctl` as witness.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use ovsdb::unixctl::{self, UnixctlError};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answers_and_errors_on_a_real_control_socket() {
    if !have_tools("commands_answers_and_errors_on_a_real_control_socket") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _srv = Server::standalone(dir.path(), NB_SCHEMA);
    let ctl = dir.path().join("s.ctl");

    // The same answer ovs-appctl gets.
    let ours = unixctl::call(&ctl, "version", &[], T)
        .await
        .expect("version");
    let appctl = Command::new("ovs-appctl")
        .arg("-t")
        .arg(&ctl)
        .arg("version")
        .output()
        .expect("ovs-appctl");
    assert!(ours.contains("ovsdb-server"), "{ours:?}");
    assert_eq!(ours, String::from_utf8_lossy(&appctl.stdout));

    // Arguments are passed through: the log level really changes.
    unixctl::call(&ctl, "vlog/set", &["jsonrpc:file:dbg"], T)
        .await
        .expect("vlog/set");
    let levels = unixctl::call(&ctl, "vlog/list", &[], T).await.unwrap();
    let line = levels
        .lines()
        .find(|l| l.trim_start().starts_with("jsonrpc"))
        .expect("jsonrpc module listed");
    assert!(line.contains("DBG"), "{line}");

    // A command the daemon does not know is the daemon's error, naming the socket.
    match unixctl::call(&ctl, "no/such-command", &[], T).await {
        Err(e @ UnixctlError::Rpc { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("s.ctl"), "{msg}");
            assert!(msg.contains("no/such-command"), "{msg}");
        }
        other => panic!("expected the daemon's error, got {other:?}"),
    }

    // No daemon behind the path.
    match unixctl::call(&dir.path().join("gone.ctl"), "version", &[], T).await {
        Err(e @ UnixctlError::Connect { .. }) => assert!(e.to_string().contains("gone.ctl")),
        other => panic!("expected a connect error, got {other:?}"),
    }
}
