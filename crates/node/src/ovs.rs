//! The node's Open vSwitch database, through the `ovsdb` crate: registration
//! (`Open_vSwitch.external_ids`), br-int, pod and management ports, and waiting for
//! `ovn-installed` on the monitor cache's events.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ovsdb::{
    Atom, Client, ClientConfig, Condition, ErrorKind, Event, IndexSpec, Mutation, Remote, Row,
    Transaction, Uuid, Value, WaitUntil,
};
use tokio::sync::mpsc::UnboundedReceiver;

const DB: &str = "Open_vSwitch";
/// The integration bridge ovn-controller programs.
pub const BR_INT: &str = "br-int";
/// Set by ovn-controller once the flows for a port are in place.
pub const OVN_INSTALLED: &str = "ovn-installed";

/// Errors of OVS operations; each names the port, bridge or row concerned.
#[derive(Debug, thiserror::Error)]
pub enum OvsError {
    #[error("OVS database {db}: {source}")]
    Connect {
        db: String,
        #[source]
        source: ovsdb::Error,
    },
    #[error("OVS {what}: {source}")]
    Txn {
        what: String,
        #[source]
        source: ovsdb::Error,
    },
    #[error("OVS {0}")]
    Missing(String),
    #[error("interface {name}: {OVN_INSTALLED} not set within {timeout:?}")]
    NotInstalled { name: String, timeout: Duration },
}

/// An OVS port to create (or bring to this state) on br-int.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    /// `type=internal` (the management port) rather than a system device (veth).
    pub internal: bool,
    /// The Interface's complete `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// Interface `mac` (internal ports only).
    pub mac: Option<String>,
    pub mtu_request: Option<u32>,
    /// Port `other_config`.
    pub port_other_config: BTreeMap<String, String>,
}

/// An interface on br-int made by a CNI ADD (it carries `external_ids:sandbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPort {
    pub name: String,
    pub iface_id: Option<String>,
    pub iface_id_ver: Option<String>,
    pub sandbox: String,
    pub ovn_installed: bool,
}

/// An interface on a bridge, with its OpenFlow port number once vswitchd assigned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeInterface {
    pub name: String,
    /// Interface `type` ("" for a system device, "internal", "patch", ...).
    pub typ: String,
    pub ofport: Option<u32>,
}

/// The node's OVS database client (cheap to clone).
#[derive(Clone)]
pub struct Ovs {
    client: Client,
    db: Arc<str>,
}

fn ext_ids(row: &Row) -> BTreeMap<String, String> {
    row.get("external_ids")
        .map(Value::to_string_map)
        .unwrap_or_default()
}

fn name_of(row: &Row) -> Option<&str> {
    row.get("name").and_then(Value::as_str)
}

fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn is_installed(row: &Row) -> bool {
    row.get("external_ids")
        .and_then(|v| v.map_get(OVN_INSTALLED))
        .and_then(Atom::as_str)
        == Some("true")
}

impl Ovs {
    /// Connects to the node's ovsdb-server and monitors the tables the agent reads.
    pub async fn connect(socket: &Path) -> Result<Ovs, OvsError> {
        let db = socket.display().to_string();
        let mut cfg = ClientConfig::new(vec![Remote::Unix(socket.to_path_buf())], DB);
        cfg.monitor_tables = Some(
            ["Open_vSwitch", "Bridge", "Port", "Interface"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        cfg.indexes = vec![
            ("Interface".into(), IndexSpec::Column("name".into())),
            ("Port".into(), IndexSpec::Column("name".into())),
            ("Bridge".into(), IndexSpec::Column("name".into())),
        ];
        // A local database: don't wait long per attempt, keep retrying forever.
        cfg.connect_timeout = Duration::from_secs(10);
        cfg.backoff_max = Duration::from_secs(1);
        let client = Client::connect(cfg)
            .await
            .map_err(|source| OvsError::Connect {
                db: db.clone(),
                source,
            })?;
        Ok(Ovs {
            client,
            db: db.into(),
        })
    }

    /// True while a connection to ovsdb-server is up.
    pub fn is_connected(&self) -> bool {
        self.client.current_remote().is_some()
    }

    /// Every cache change from now on (subscribe before the change you wait for).
    pub fn subscribe(&self) -> UnboundedReceiver<Event> {
        self.client.cache().subscribe()
    }

    async fn transact(&self, what: &str, txn: &Transaction) -> Result<(), OvsError> {
        self.client
            .transact(txn)
            .await
            .map(|_| ())
            .map_err(|source| OvsError::Txn {
                what: what.to_string(),
                source,
            })
    }

    fn row_by_name(&self, table: &str, name: &str) -> Option<(Uuid, Arc<Row>)> {
        self.client
            .cache()
            .lookup(table, &IndexSpec::Column("name".into()), &Value::from(name))
            .into_iter()
            .next()
    }

    /// `external_ids` of the single `Open_vSwitch` row, if there is one.
    pub fn system_external_ids(&self) -> Option<BTreeMap<String, String>> {
        self.client
            .cache()
            .table_rows("Open_vSwitch")
            .first()
            .map(|(_, r)| ext_ids(r))
    }

    /// Sets these keys of `Open_vSwitch.external_ids` (others are kept). Creates the
    /// row if the database is fresh (what `ovs-vsctl init` does).
    pub async fn set_system_external_ids(
        &self,
        ids: &BTreeMap<String, String>,
    ) -> Result<(), OvsError> {
        let mut txn = Transaction::new(DB);
        if self.client.cache().len("Open_vSwitch") == 0 {
            // Guarded so that two writers never create two rows.
            txn.wait(
                "Open_vSwitch",
                vec![],
                vec!["_uuid".into()],
                WaitUntil::Equal,
                vec![],
                Some(0),
            );
            txn.insert("Open_vSwitch", Row::new());
        }
        txn.mutate(
            "Open_vSwitch",
            vec![],
            vec![
                Mutation::delete("external_ids", Value::set(ids.keys().map(|k| k.as_str()))),
                Mutation::insert("external_ids", string_map(ids)),
            ],
        );
        self.transact("set Open_vSwitch external_ids", &txn).await
    }

    /// Creates a bridge with its internal port unless one of that name exists. ovn-controller
    /// would create br-int too; doing it here lets the management port go in at once.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        datapath_type: Option<&str>,
        secure: bool,
    ) -> Result<(), OvsError> {
        if self.row_by_name("Bridge", name).is_some() {
            return Ok(());
        }
        let mut txn = Transaction::new(DB);
        txn.wait(
            "Bridge",
            vec![Condition::eq("name", name)],
            vec!["name".into()],
            WaitUntil::Equal,
            vec![],
            Some(0),
        );
        let mut iface = Row::new();
        iface.insert("name".into(), Value::from(name));
        iface.insert("type".into(), Value::from("internal"));
        txn.insert_named("Interface", "iface", iface);
        let mut port = Row::new();
        port.insert("name".into(), Value::from(name));
        port.insert(
            "interfaces".into(),
            Value::set([Atom::NamedUuid("iface".into())]),
        );
        txn.insert_named("Port", "port", port);
        let mut br = Row::new();
        br.insert("name".into(), Value::from(name));
        br.insert("ports".into(), Value::set([Atom::NamedUuid("port".into())]));
        if let Some(dp) = datapath_type {
            br.insert("datapath_type".into(), Value::from(dp));
        }
        if secure {
            br.insert("fail_mode".into(), Value::from("secure"));
            br.insert(
                "other_config".into(),
                Value::string_map([("disable-in-band", "true")]),
            );
        }
        txn.insert_named("Bridge", "br", br);
        txn.mutate(
            "Open_vSwitch",
            vec![],
            vec![Mutation::insert(
                "bridges",
                Value::set([Atom::NamedUuid("br".into())]),
            )],
        );
        match self.client.transact(&txn).await {
            Ok(_) => Ok(()),
            // Someone (ovn-controller) made it in between: fine.
            Err(ovsdb::Error::Txn(t)) if t.kind() == Some(&ErrorKind::TimedOut) => Ok(()),
            Err(source) => Err(OvsError::Txn {
                what: format!("create bridge {name}"),
                source,
            }),
        }
    }

    /// Adds the port to br-int, or brings an existing port of that name to `spec`
    /// (a restarted agent or a repeated ADD). Ports of other names that carry the same
    /// `iface-id` are removed in the same transaction: only the newest sandbox of a pod
    /// may claim its logical port.
    pub async fn add_port(&self, spec: &PortSpec) -> Result<(), OvsError> {
        let mut txn = Transaction::new(DB);
        let br = Condition::eq("name", BR_INT);
        if let Some(id) = spec.external_ids.get("iface-id") {
            for (_, iface) in self.client.cache().table_rows("Interface") {
                let Some(other) = name_of(&iface) else {
                    continue;
                };
                if other != spec.name && ext_ids(&iface).get("iface-id") == Some(id) {
                    if let Some((puuid, _)) = self.row_by_name("Port", other) {
                        txn.mutate(
                            "Bridge",
                            vec![br.clone()],
                            vec![Mutation::delete("ports", Value::set([puuid]))],
                        );
                    }
                }
            }
        }
        let mut iface = Row::new();
        iface.insert("external_ids".into(), string_map(&spec.external_ids));
        if spec.internal {
            iface.insert("type".into(), Value::from("internal"));
        }
        if let Some(mac) = &spec.mac {
            iface.insert("mac".into(), Value::from(mac.as_str()));
        }
        if let Some(mtu) = spec.mtu_request {
            iface.insert("mtu_request".into(), Value::from(i64::from(mtu)));
        }
        let exists = self.row_by_name("Port", &spec.name).is_some()
            && self.row_by_name("Interface", &spec.name).is_some();
        if exists {
            txn.update(
                "Interface",
                vec![Condition::eq("name", spec.name.as_str())],
                iface,
            );
            let mut port = Row::new();
            port.insert("other_config".into(), string_map(&spec.port_other_config));
            txn.update(
                "Port",
                vec![Condition::eq("name", spec.name.as_str())],
                port,
            );
        } else {
            iface.insert("name".into(), Value::from(spec.name.as_str()));
            txn.insert_named("Interface", "iface", iface);
            let mut port = Row::new();
            port.insert("name".into(), Value::from(spec.name.as_str()));
            port.insert(
                "interfaces".into(),
                Value::set([Atom::NamedUuid("iface".into())]),
            );
            port.insert("other_config".into(), string_map(&spec.port_other_config));
            txn.insert_named("Port", "port", port);
            txn.mutate(
                "Bridge",
                vec![br],
                vec![Mutation::insert(
                    "ports",
                    Value::set([Atom::NamedUuid("port".into())]),
                )],
            );
        }
        if self.row_by_name("Bridge", BR_INT).is_none() {
            return Err(OvsError::Missing(format!(
                "bridge {BR_INT} does not exist (adding port {})",
                spec.name
            )));
        }
        self.transact(&format!("add port {} to {BR_INT}", spec.name), &txn)
            .await
    }

    /// Removes ports by name from br-int (Port and Interface rows go with the
    /// reference). Names that are not there are skipped.
    pub async fn del_ports(&self, names: &[String]) -> Result<(), OvsError> {
        if names.is_empty() {
            return Ok(());
        }
        // Ask the server, not the cache: a port added a moment ago may not be cached yet.
        let mut sel = Transaction::new(DB);
        for n in names {
            sel.select("Port", vec![Condition::eq("name", n.as_str())]);
        }
        let res = self
            .client
            .transact(&sel)
            .await
            .map_err(|source| OvsError::Txn {
                what: format!("look up ports {names:?}"),
                source,
            })?;
        let uuids: Vec<Uuid> = res
            .iter()
            .flat_map(|r| r.rows.iter().flatten())
            .filter_map(|row| row.get("_uuid").and_then(Value::as_uuid))
            .collect();
        if uuids.is_empty() {
            return Ok(());
        }
        let mut txn = Transaction::new(DB);
        txn.mutate(
            "Bridge",
            vec![],
            vec![Mutation::delete("ports", Value::set(uuids))],
        );
        self.transact(&format!("delete ports {names:?}"), &txn)
            .await
    }

    /// Interfaces made by CNI ADDs (they have `external_ids:sandbox`).
    pub fn pod_ports(&self) -> Vec<PodPort> {
        let mut out: Vec<PodPort> = self
            .client
            .cache()
            .table_rows("Interface")
            .into_iter()
            .filter_map(|(_, row)| {
                let ids = ext_ids(&row);
                let sandbox = ids.get("sandbox")?.clone();
                Some(PodPort {
                    name: name_of(&row)?.to_string(),
                    iface_id: ids.get("iface-id").cloned(),
                    iface_id_ver: ids.get("iface-id-ver").cloned(),
                    sandbox,
                    ovn_installed: is_installed(&row),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The Interface row of that name, from the cache.
    pub fn interface(&self, name: &str) -> Option<Arc<Row>> {
        self.row_by_name("Interface", name).map(|(_, r)| r)
    }

    /// Whether the port exists on br-int and ovn-controller has installed it.
    pub fn is_installed(&self, name: &str) -> bool {
        self.interface(name).is_some_and(|r| is_installed(&r))
    }

    /// Waits (on cache events from `events`, subscribed before the port was written)
    /// until the interface carries `ovn-installed=true`.
    pub async fn wait_installed(
        &self,
        mut events: UnboundedReceiver<Event>,
        name: &str,
        timeout: Duration,
    ) -> Result<(), OvsError> {
        let wait = async {
            if self.is_installed(name) {
                return true;
            }
            while let Some(ev) = events.recv().await {
                if let Event::Insert { table, new, .. } | Event::Update { table, new, .. } = &ev {
                    if &**table == "Interface" && name_of(new) == Some(name) && is_installed(new) {
                        return true;
                    }
                }
            }
            false
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(true) => Ok(()),
            _ => Err(OvsError::NotInstalled {
                name: name.to_string(),
                timeout,
            }),
        }
    }

    /// The MAC a bridge's interface uses (`mac_in_use`), falling back to the bridge's
    /// `other_config:hwaddr`.
    pub fn bridge_mac(&self, bridge: &str) -> Option<String> {
        let from_iface = self.interface(bridge).and_then(|r| {
            r.get("mac_in_use")
                .and_then(Value::as_str)
                .map(String::from)
        });
        from_iface.or_else(|| {
            self.row_by_name("Bridge", bridge).and_then(|(_, r)| {
                r.get("other_config")
                    .and_then(|v| v.map_get("hwaddr"))
                    .and_then(Atom::as_str)
                    .map(String::from)
            })
        })
    }

    /// A bridge's `datapath_type` ("" is the kernel default), if the bridge exists.
    pub fn bridge_datapath_type(&self, bridge: &str) -> Option<String> {
        self.row_by_name("Bridge", bridge).map(|(_, r)| {
            r.get("datapath_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        })
    }

    /// The interfaces of a bridge's ports (from the cache), sorted by name.
    pub fn bridge_interfaces(&self, bridge: &str) -> Vec<BridgeInterface> {
        let cache = self.client.cache();
        let Some((_, br)) = self.row_by_name("Bridge", bridge) else {
            return Vec::new();
        };
        let mut out: Vec<BridgeInterface> = br
            .get("ports")
            .map(Value::set_elements)
            .unwrap_or_default()
            .iter()
            .filter_map(Atom::as_uuid)
            .filter_map(|p| cache.row("Port", p))
            .flat_map(|port| {
                port.get("interfaces")
                    .map(|v| v.set_elements().to_vec())
                    .unwrap_or_default()
            })
            .filter_map(|a| a.as_uuid())
            .filter_map(|i| cache.row("Interface", i))
            .filter_map(|i| {
                Some(BridgeInterface {
                    name: name_of(&i)?.to_string(),
                    typ: i
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    // -1 (failed) and the empty set (not yet assigned) are both "none".
                    ofport: i
                        .get("ofport")
                        .and_then(Value::as_i64)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n > 0),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The database this client talks to, for messages.
    pub fn db(&self) -> &str {
        &self.db
    }
}
