//! The rows and transactions all three clients send: pod-like Logical_Switch_Ports (the
//! same fields as python_idl.py's port_fields) on switches named `bench*`.

use std::collections::BTreeMap;

use anyhow::Result;
use ovn_models::nb::{LogicalSwitch, LogicalSwitchPort};
use ovsdb::{Atom, Condition, Model, Mutation, Transaction, Value};

pub const DB: &str = "OVN_Northbound";
pub const SWITCH: &str = "bench";

pub fn port(i: usize) -> LogicalSwitchPort {
    let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
    let addr = format!("0a:58:0a:{a:02x}:{b:02x}:{c:02x} 10.{a}.{b}.{c}");
    LogicalSwitchPort {
        name: format!("bench_pod{i}"),
        addresses: [addr.clone()].into(),
        port_security: [addr].into(),
        options: BTreeMap::from([
            ("requested-chassis".to_string(), "node1".to_string()),
            ("iface-id-ver".to_string(), format!("uid-{i}")),
        ]),
        external_ids: BTreeMap::from([
            ("namespace".to_string(), "bench".to_string()),
            ("pod".to_string(), "true".to_string()),
        ]),
        ..Default::default()
    }
}

/// One transaction: a switch `name` holding ports `first..first+n`.
pub fn switch_with_ports(name: &str, first: usize, n: usize) -> Transaction {
    let mut txn = Transaction::new(DB);
    let mut refs = Vec::with_capacity(n);
    for i in first..first + n {
        let named = format!("p{i}");
        txn.insert_named(
            LogicalSwitchPort::TABLE,
            named.clone(),
            port(i).to_insert_row(),
        );
        refs.push(Atom::NamedUuid(named));
    }
    let ls = LogicalSwitch {
        name: name.to_string(),
        ..Default::default()
    };
    let mut row = ls.to_insert_row();
    row.insert(LogicalSwitch::COL_PORTS.into(), Value::set(refs));
    txn.insert(LogicalSwitch::TABLE, row);
    txn
}

/// One pod add: insert port `i` and reference it from the switch `bench`.
pub fn add_port(i: usize) -> Transaction {
    let mut txn = Transaction::new(DB);
    txn.insert_named(LogicalSwitchPort::TABLE, "p", port(i).to_insert_row());
    txn.mutate(
        LogicalSwitch::TABLE,
        vec![Condition::eq(LogicalSwitch::COL_NAME, SWITCH)],
        vec![Mutation::insert(
            LogicalSwitch::COL_PORTS,
            Value::set([Atom::NamedUuid("p".into())]),
        )],
    );
    txn
}

/// Deletes every switch; their ports (not a root table) go with them.
pub fn reset() -> Transaction {
    let mut txn = Transaction::new(DB);
    txn.delete(LogicalSwitch::TABLE, vec![]);
    txn
}

/// The exact JSON-RPC request bytes for `txn`, as the client would send them.
pub fn request_bytes(txn: &Transaction, id: u64) -> Result<Vec<u8>> {
    let mut params = vec![serde_json::to_value(&txn.database)?];
    for op in &txn.operations {
        params.push(serde_json::to_value(op)?);
    }
    let req = serde_json::json!({"id": id, "method": "transact", "params": params});
    Ok(serde_json::to_vec(&req)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Python IDL must do the same work: its rows equal ours, field for field.
    #[test]
    fn python_rows_equal_rust_rows() {
        if !testkit::require_env(&[crate::python::PYTHON]) {
            return;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python_idl.py");
        let code = format!(
            "import importlib.util, json\n\
             spec = importlib.util.spec_from_file_location('b', {script:?})\n\
             m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n\
             print(json.dumps([m.port_fields(i) for i in (0, 7, 70000)]))"
        );
        let out = std::process::Command::new(crate::python::PYTHON)
            .args(["-c", &code])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let py: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
        for (p, i) in py.iter().zip([0usize, 7, 70000]) {
            let lsp = port(i);
            let ours = serde_json::json!({
                "name": lsp.name,
                "addresses": lsp.addresses,
                "port_security": lsp.port_security,
                "options": lsp.options,
                "external_ids": lsp.external_ids,
            });
            assert_eq!(p, &ours, "port {i}");
            // And the insert sends exactly those columns.
            let cols: Vec<String> = lsp.to_insert_row().into_keys().collect();
            assert_eq!(
                cols,
                [
                    "addresses",
                    "external_ids",
                    "name",
                    "options",
                    "port_security"
                ]
            );
        }
    }
}
