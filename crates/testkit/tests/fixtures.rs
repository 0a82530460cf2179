//! The fixtures against the real binaries: each test asserts what the fixture promises.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use testkit::{OvnCentral, OvsdbServer, RaftCluster, OVN_NB_SCHEMA, OVN_SB_SCHEMA};

/// One JSON-RPC call over a unix socket; ovsdb-server answers one JSON object per reply.
fn call(sock: &Path, method: &str, params: serde_json::Value) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    let req = serde_json::json!({"id": 1, "method": method, "params": params});
    s.write_all(req.to_string().as_bytes()).expect("write");
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(s)).into_iter();
    loop {
        let v: serde_json::Value = de.next().expect("reply").expect("json");
        if v["id"] == 1 {
            return v;
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    // A reaped child no longer exists; /proc tells without signalling anything.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn ovsdb_server_serves_restarts_keeps_data_and_cleans_up() {
    if !testkit::require_env(&[
        "ovsdb-server",
        "ovsdb-tool",
        "ovs-appctl",
        OVN_NB_SCHEMA,
        OVN_SB_SCHEMA,
    ]) {
        return;
    }
    let mut server = OvsdbServer::builder()
        .schema(OVN_NB_SCHEMA)
        .schema(OVN_SB_SCHEMA)
        .tcp(true)
        .start()
        .expect("start");
    assert_eq!(server.db_names(), ["OVN_Northbound", "OVN_Southbound"]);
    let dbs = call(server.socket_path(), "list_dbs", serde_json::json!([]));
    let mut names: Vec<&str> = dbs["result"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["OVN_Northbound", "OVN_Southbound", "_Server"]);

    // The TCP port is real and kept across a restart.
    let port = server.tcp_port().expect("tcp port");
    assert_eq!(server.tcp_remote(), Some(format!("tcp:127.0.0.1:{port}")));
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");

    let ins = serde_json::json!(["OVN_Northbound",
        {"op": "insert", "table": "Logical_Switch", "row": {"name": "sw0"}}]);
    let r = call(server.socket_path(), "transact", ins);
    assert!(r["error"].is_null(), "{r}");

    let old_pid = server.pid().expect("running");
    server.kill();
    assert!(!pid_alive(old_pid), "SIGKILL must have ended pid {old_pid}");
    assert!(!server.is_running());
    server.restart().expect("restart");
    let new_pid = server.pid().expect("running again");
    assert_ne!(old_pid, new_pid);
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("same tcp port after restart");

    let sel = serde_json::json!(["OVN_Northbound",
        {"op": "select", "table": "Logical_Switch", "where": [], "columns": ["name"]}]);
    let r = call(server.socket_path(), "transact", sel);
    assert_eq!(
        r["result"][0]["rows"],
        serde_json::json!([{"name": "sw0"}]),
        "data survives"
    );

    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!pid_alive(new_pid), "drop stops the server");
    assert!(!dir.exists(), "drop removes {}", dir.display());
}

#[test]
fn raft_cluster_elects_a_new_leader_when_the_leader_dies() {
    if !testkit::require_env(&["ovsdb-server", "ovsdb-tool", "ovs-appctl", OVN_NB_SCHEMA]) {
        return;
    }
    let mut cluster = RaftCluster::start(OVN_NB_SCHEMA, 3).expect("cluster");
    assert_eq!(cluster.remotes().len(), 3);
    let leader = cluster.leader().expect("leader");
    cluster.kill(leader);
    let next = cluster.leader().expect("new leader");
    assert_ne!(leader, next);
    cluster.restart(leader).expect("rejoin");
    let status = cluster.status(leader).expect("status");
    assert!(status.contains("Role: follower"), "{status}");
    // Clients can still write through any member.
    let ins = serde_json::json!(["OVN_Northbound",
        {"op": "insert", "table": "Logical_Switch", "row": {"name": "sw0"}}]);
    let sock = cluster.member(leader).socket_path().to_path_buf();
    let r = call(&sock, "transact", ins);
    assert!(
        r["error"].is_null() && r["result"][0]["uuid"].is_array(),
        "{r}"
    );
}

#[test]
fn ovn_central_runs_northd_between_nb_and_sb() {
    if !testkit::require_env(&[
        "ovsdb-server",
        "ovsdb-tool",
        "ovn-northd",
        "ovn-nbctl",
        "ovs-appctl",
    ]) {
        return;
    }
    let central = OvnCentral::start().expect("central");
    let nb = central.nb_remote();
    let nb_sock = nb.trim_start_matches("unix:");
    let ins = serde_json::json!(["OVN_Northbound",
        {"op": "insert", "table": "Logical_Switch", "row": {"name": "sw0"}}]);
    let r = call(Path::new(nb_sock), "transact", ins);
    assert!(r["error"].is_null(), "{r}");
    central.sync().expect("northd caught up");
    let sb_sock = central.sb_remote();
    let sel = serde_json::json!(["OVN_Southbound",
        {"op": "select", "table": "Datapath_Binding", "where": [], "columns": ["external_ids"]}]);
    let r = call(
        Path::new(sb_sock.trim_start_matches("unix:")),
        "transact",
        sel,
    );
    assert!(r["result"][0]["rows"].to_string().contains("sw0"), "{r}");
    assert!(
        central.northd_log().contains("ovn-northd"),
        "log is readable"
    );
    assert_eq!(central.northd_problems(), Vec::<String>::new());
}

#[test]
fn raft_over_tcp_and_cleanup_after_a_panic() {
    if !testkit::require_env(&["ovsdb-server", "ovsdb-tool", "ovs-appctl", OVN_NB_SCHEMA]) {
        return;
    }
    let mut pids = Vec::new();
    let mut dir = None;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cluster = RaftCluster::start_with(OVN_NB_SCHEMA, 3, testkit::RaftTransport::Tcp)
            .expect("cluster");
        let leader = cluster.leader().expect("leader");
        let status = cluster.status(leader).expect("status");
        assert!(status.contains("tcp:127.0.0.1:"), "{status}");
        dir = Some(cluster.member_dir(0));
        for i in 0..cluster.len() {
            let sock = cluster.member(i).socket_path().to_path_buf();
            let r = call(&sock, "list_dbs", serde_json::json!([]));
            assert!(r["result"].to_string().contains("OVN_Northbound"), "{r}");
        }
        pids = (0..3)
            .map(|i| std::fs::read_to_string(cluster.member_dir(i).join("ovsdb-server.pid")))
            .collect::<Result<Vec<_>, _>>()
            .expect("pidfiles")
            .iter()
            .map(|p| p.trim().parse::<u32>().expect("pid"))
            .collect();
        panic!("a test failing while the cluster runs");
    }));
    assert!(r.is_err());
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(!pid_alive(pid), "member {pid} survived the panic");
    }
    let dir = dir.expect("dir");
    assert!(!dir.exists(), "{} left behind", dir.display());
}
