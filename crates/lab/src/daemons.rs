//! The real OVN and OVS daemons of a lab: OVN central (NB, SB — NB optionally a
//! 3-member Raft cluster — and ovn-northd) and, per node, ovsdb-server, ovs-vswitchd
//! and ovn-controller in the node's namespace. All run in the foreground as children of
//! the [`Supervisor`], each with its own log and unixctl socket in the lab directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ovnk_netns::NetNs;
use ovsdb::client::{Client, ClientConfig};
use ovsdb::txn::{Mutation, Transaction};
use ovsdb::{Atom, Row, Value};

use crate::daemon::{AfterStart, DaemonSpec, Supervisor};
use crate::layout::{LabLayout, NodeLayout};
use crate::LabError;

pub const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
pub const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The daemons' stdout/stderr already go to their log file: without this every line
/// would be written there twice.
const LOG_CONSOLE_OFF: &str = "-vconsole:off";

/// The programs a lab needs, checked before anything starts so a person gets one clear
/// message instead of a half-built lab.
pub const REQUIRED_PROGRAMS: &[&str] = &[
    "ovsdb-server",
    "ovsdb-tool",
    "ovs-vswitchd",
    "ovn-northd",
    "ovn-controller",
];

/// Finds `prog` on PATH (and the sbin directories, which root's PATH may lack).
pub fn find_program(prog: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file());
    found
}

pub fn check_programs() -> Result<(), LabError> {
    let missing: Vec<&str> = REQUIRED_PROGRAMS
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::Setup(format!(
            "OVN/OVS programs missing: {} — run scripts/setup.sh (installs openvswitch-switch, ovn-central, ovn-host)",
            missing.join(", ")
        )))
    }
}

fn program(prog: &str) -> Result<PathBuf, LabError> {
    find_program(prog).ok_or_else(|| LabError::Setup(format!("{prog} not found")))
}

/// `ovsdb-tool` makes database files (it is a file tool, not a client of a server).
fn ovsdb_tool(args: &[&str]) -> Result<(), LabError> {
    let out = std::process::Command::new(program("ovsdb-tool")?)
        .args(args)
        .output()
        .map_err(|e| LabError::Setup(format!("ovsdb-tool {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(LabError::Setup(format!(
            "ovsdb-tool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Waits (bounded) for a unix socket a daemon creates.
pub async fn wait_for_socket(path: &Path, daemon: &str, log: &Path) -> Result<(), LabError> {
    for _ in 0..400 {
        if path.exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(LabError::Daemon {
        name: daemon.to_string(),
        reason: format!(
            "{} did not appear within 10 s; see its log {}",
            path.display(),
            log.display()
        ),
    })
}

/// How ovnk reaches OVN central.
#[derive(Debug, Clone)]
pub struct CentralRemotes {
    /// NB remotes; several when the NB is a Raft cluster.
    pub nb: Vec<String>,
    pub sb: String,
}

/// Starts NB, SB and ovn-northd (NB as a 3-member Raft cluster when `raft`).
pub async fn start_central(
    layout: &LabLayout,
    sup: &Supervisor,
    raft: bool,
) -> Result<CentralRemotes, LabError> {
    let dir = layout.central_dir();
    let logs = layout.central_log_dir();
    for d in [&dir, &logs] {
        std::fs::create_dir_all(d).map_err(|e| LabError::Setup(format!("{}: {e}", d.display())))?;
    }
    let pids = layout.dir.join("pids");
    let server = program("ovsdb-server")?;
    let mut nb_remotes = Vec::new();
    if raft {
        let addr = |k: usize| {
            let o = layout.raft_base.octets();
            format!(
                "tcp:{}.{}.{}.{}:6643",
                o[0],
                o[1],
                o[2],
                o[3] as usize + k - 1
            )
        };
        for k in 1..=3 {
            let db = dir.join(format!("nb{k}.db"));
            if db.exists() {
                continue;
            }
            if k == 1 {
                ovsdb_tool(&["create-cluster", &s(&db), NB_SCHEMA, &addr(1)])?;
            } else {
                ovsdb_tool(&[
                    "join-cluster",
                    &s(&db),
                    "OVN_Northbound",
                    &addr(k),
                    &addr(1),
                ])?;
            }
        }
        for k in 1..=3 {
            let sock = layout.nb_member_socket(k);
            let log = logs.join(format!("nb{k}.log"));
            let spec = DaemonSpec::new(
                &format!("central/nb{k}"),
                &server,
                log.clone(),
                pids.join(format!("nb{k}.pid")),
            )
            .args([
                s(&dir.join(format!("nb{k}.db"))),
                format!("--remote=punix:{}", s(&sock)),
                format!("--unixctl={}", s(&dir.join(format!("nb{k}.ctl")))),
                format!("--log-file={}", s(&log)),
                LOG_CONSOLE_OFF.into(),
            ]);
            sup.start(spec).await?;
            nb_remotes.push(format!("unix:{}", s(&sock)));
        }
        for k in 1..=3 {
            wait_for_socket(
                &layout.nb_member_socket(k),
                &format!("central/nb{k}"),
                &logs.join(format!("nb{k}.log")),
            )
            .await?;
        }
    } else {
        let db = dir.join("nb.db");
        if !db.exists() {
            ovsdb_tool(&["create", &s(&db), NB_SCHEMA])?;
        }
        let log = logs.join("nb.log");
        sup.start(
            DaemonSpec::new("central/nb", &server, log.clone(), pids.join("nb.pid")).args([
                s(&db),
                format!("--remote=punix:{}", s(&layout.nb_socket())),
                format!("--unixctl={}", s(&dir.join("nb.ctl"))),
                format!("--log-file={}", s(&log)),
                LOG_CONSOLE_OFF.into(),
            ]),
        )
        .await?;
        wait_for_socket(&layout.nb_socket(), "central/nb", &log).await?;
        nb_remotes.push(format!("unix:{}", s(&layout.nb_socket())));
    }

    let sb_db = dir.join("sb.db");
    if !sb_db.exists() {
        ovsdb_tool(&["create", &s(&sb_db), SB_SCHEMA])?;
    }
    let sb_log = logs.join("sb.log");
    sup.start(
        DaemonSpec::new("central/sb", &server, sb_log.clone(), pids.join("sb.pid")).args([
            s(&sb_db),
            format!("--remote=punix:{}", s(&layout.sb_socket())),
            format!("--unixctl={}", s(&dir.join("sb.ctl"))),
            format!("--log-file={}", s(&sb_log)),
            LOG_CONSOLE_OFF.into(),
        ]),
    )
    .await?;
    wait_for_socket(&layout.sb_socket(), "central/sb", &sb_log).await?;
    let sb = format!("unix:{}", s(&layout.sb_socket()));

    let northd_log = logs.join("ovn-northd.log");
    sup.start(
        DaemonSpec::new(
            "central/ovn-northd",
            program("ovn-northd")?,
            northd_log.clone(),
            pids.join("ovn-northd.pid"),
        )
        .args([
            format!("--ovnnb-db={}", nb_remotes.join(",")),
            format!("--ovnsb-db={sb}"),
            format!("--unixctl={}", s(&dir.join("ovn-northd.ctl"))),
            format!("--log-file={}", s(&northd_log)),
            LOG_CONSOLE_OFF.into(),
        ]),
    )
    .await?;
    Ok(CentralRemotes { nb: nb_remotes, sb })
}

/// The environment OVS/OVN tools need to find a node's sockets (LAB.md pitfall 4).
pub fn node_env(node: &NodeLayout) -> Vec<(String, String)> {
    let run = s(&node.run_dir());
    let log = s(&node.log_dir());
    let db = s(&node.dir);
    vec![
        ("OVS_RUNDIR".into(), run.clone()),
        ("OVS_LOGDIR".into(), log.clone()),
        ("OVS_DBDIR".into(), db.clone()),
        ("OVN_RUNDIR".into(), run),
        ("OVN_LOGDIR".into(), log),
        ("OVN_DBDIR".into(), db),
    ]
}

fn node_daemon(
    layout: &LabLayout,
    node: &NodeLayout,
    ns: &Arc<NetNs>,
    daemon: &str,
    prog: PathBuf,
) -> DaemonSpec {
    let mut spec = DaemonSpec::new(
        &format!("{}/{daemon}", node.name),
        prog,
        node.log_dir().join(format!("{daemon}.log")),
        layout
            .dir
            .join("pids")
            .join(format!("{}-{daemon}.pid", node.name)),
    )
    .in_netns(ns.clone());
    for (k, v) in node_env(node) {
        spec = spec.env(k, v);
    }
    spec
}

/// Starts the node's ovsdb-server and ovs-vswitchd, then gives the database its root row
/// and the gateway bridge `breth0` (userspace datapath, its own MAC, `eth0` as a port).
/// Returns a client of the node's Open_vSwitch database.
pub async fn start_node_ovs(
    layout: &LabLayout,
    node: &NodeLayout,
    ns: &Arc<NetNs>,
    sup: &Supervisor,
) -> Result<Client, LabError> {
    for d in [node.run_dir(), node.log_dir()] {
        std::fs::create_dir_all(&d)
            .map_err(|e| LabError::Setup(format!("{}: {e}", d.display())))?;
    }
    if !node.ovs_db().exists() {
        ovsdb_tool(&["create", &s(&node.ovs_db()), VSWITCH_SCHEMA])?;
    }
    let run = node.run_dir();
    let log = node.log_dir();
    sup.start(
        node_daemon(layout, node, ns, "ovsdb-server", program("ovsdb-server")?).args([
            s(&node.ovs_db()),
            format!("--remote=punix:{}", s(&node.ovs_socket())),
            format!("--unixctl={}", s(&run.join("ovsdb-server.ctl"))),
            format!("--log-file={}", s(&log.join("ovsdb-server.log"))),
            LOG_CONSOLE_OFF.into(),
        ]),
    )
    .await?;
    wait_for_socket(
        &node.ovs_socket(),
        &format!("{}/ovsdb-server", node.name),
        &log.join("ovsdb-server.log"),
    )
    .await?;

    let remote = format!("unix:{}", s(&node.ovs_socket()));
    let client = Client::connect(ClientConfig::new(
        vec![remote
            .parse()
            .map_err(|e| LabError::Ovsdb(format!("{e}")))?],
        "Open_vSwitch",
    ))
    .await
    .map_err(|e| LabError::Ovsdb(format!("{} Open_vSwitch: {e}", node.name)))?;
    init_ovs_db(&client, node).await?;

    let ctl = run.join("ovs-vswitchd.ctl");
    let who = format!("{}/ovs-vswitchd", node.name);
    sup.start(
        node_daemon(layout, node, ns, "ovs-vswitchd", program("ovs-vswitchd")?)
            .args([
                remote.clone(),
                format!("--unixctl={}", s(&ctl)),
                format!("--log-file={}", s(&log.join("ovs-vswitchd.log"))),
                LOG_CONSOLE_OFF.into(),
            ])
            .after_start(AfterStart::new(move || {
                disable_megaflows(ctl.clone(), who.clone())
            })),
    )
    .await?;
    Ok(client)
}

/// Works around a bug of OVS 3.1's userspace datapath: after an OpenFlow change, a
/// cached megaflow for traffic that arrived through the Geneve tunnel can keep its old
/// actions for as long as packets keep hitting it (the revalidator does not replace it;
/// `revalidator/purge` does). A NetworkPolicy that denies a remote pod then still lets
/// its new connections through. Antrea met the same on kind (antrea#897, antrea#1608).
/// Without megaflows every new connection is translated against the current flow
/// tables; a lab's traffic is small, so the extra upcalls cost nothing that matters.
/// A restarted ovs-vswitchd forgets the setting, so this runs after every start.
async fn disable_megaflows(ctl: PathBuf, who: String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match ovsdb::unixctl::call(
            &ctl,
            "upcall/disable-megaflows",
            &[],
            Duration::from_secs(5),
        )
        .await
        {
            Ok(_) => {
                tracing::debug!(daemon = %who, "megaflows disabled (userspace datapath workaround)");
                return;
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(daemon = %who, "cannot disable megaflows; NetworkPolicy changes may reach remote pods late: {e}");
                return;
            }
            // Not listening yet (or a dead instance's socket): wait for this one.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Starts ovn-controller in the node's namespace against its local OVS database.
pub async fn start_ovn_controller(
    layout: &LabLayout,
    node: &NodeLayout,
    ns: &Arc<NetNs>,
    sup: &Supervisor,
) -> Result<(), LabError> {
    let log = node.log_dir().join("ovn-controller.log");
    sup.start(
        node_daemon(
            layout,
            node,
            ns,
            "ovn-controller",
            program("ovn-controller")?,
        )
        .args([
            format!("unix:{}", s(&node.ovs_socket())),
            format!("--log-file={}", s(&log)),
            LOG_CONSOLE_OFF.into(),
        ]),
    )
    .await?;
    Ok(())
}

/// The root row (what `ovs-vsctl init` does) and `breth0` with `eth0` in it. Idempotent.
async fn init_ovs_db(client: &Client, node: &NodeLayout) -> Result<(), LabError> {
    let err = |e: ovsdb::client::Error| LabError::Ovsdb(format!("{} Open_vSwitch: {e}", node.name));
    let cache = client.cache();
    let mut txn = Transaction::new("Open_vSwitch");
    let root_exists = cache.len("Open_vSwitch") > 0;
    let has_bridge = cache
        .table_rows("Bridge")
        .iter()
        .any(|(_, r)| r.get("name").and_then(|v| v.as_str()) == Some("breth0"));
    if !has_bridge {
        let iface = |name: &str, internal: bool| {
            let mut r = Row::new();
            r.insert("name".into(), Value::from(name));
            if internal {
                r.insert("type".into(), Value::from("internal"));
            }
            r
        };
        let port = |name: &str, iface: &str| {
            let mut r = Row::new();
            r.insert("name".into(), Value::from(name));
            r.insert(
                "interfaces".into(),
                Value::set([Atom::NamedUuid(iface.into())]),
            );
            r
        };
        txn.insert_named("Interface", "i_br", iface("breth0", true));
        txn.insert_named("Port", "p_br", port("breth0", "i_br"));
        txn.insert_named("Interface", "i_eth0", iface("eth0", false));
        txn.insert_named("Port", "p_eth0", port("eth0", "i_eth0"));
        let mac = node
            .breth0_mac()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let mut br = Row::new();
        br.insert("name".into(), Value::from("breth0"));
        br.insert("datapath_type".into(), Value::from("netdev"));
        br.insert(
            "ports".into(),
            Value::set([
                Atom::NamedUuid("p_br".into()),
                Atom::NamedUuid("p_eth0".into()),
            ]),
        );
        br.insert(
            "other_config".into(),
            Value::string_map([("hwaddr", mac.as_str())]),
        );
        txn.insert_named("Bridge", "br", br);
        let bridges = Value::set([Atom::NamedUuid("br".into())]);
        if root_exists {
            // There is exactly one root row: no condition needed.
            txn.mutate(
                "Open_vSwitch",
                vec![],
                vec![Mutation::insert("bridges", bridges)],
            );
        } else {
            let mut root = Row::new();
            root.insert("bridges".into(), bridges);
            txn.insert("Open_vSwitch", root);
        }
    } else if !root_exists {
        txn.insert("Open_vSwitch", Row::new());
    }
    if txn.is_empty() {
        return Ok(());
    }
    client.transact(&txn).await.map_err(err)?;
    Ok(())
}
