//! Decode + cache-apply speed on a synthetic 100k-row `update2` reply (no server needed).
//! Run: `cargo run --release -p ovsdb --example decode`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use ovsdb::update::{RowUpdate2, TableUpdates, Updates};
use ovsdb::{ApplyMode, Cache, DatabaseSchema};

fn main() {
    let n = 100_000;
    let mut j = String::from(r#"{"id":1,"error":null,"result":{"Logical_Switch_Port":{"#);
    for i in 0..n {
        let (a, b, c) = ((i >> 16) & 255, (i >> 8) & 255, i & 255);
        let addr = format!("0a:58:0a:{a:02x}:{b:02x}:{c:02x} 10.{a}.{b}.{c}");
        if i > 0 {
            j.push(',');
        }
        let _ = write!(
            j,
            r#""{:08x}-0000-4000-8000-{:012x}":{{"initial":{{"name":"bench_pod{i}","addresses":"{addr}","port_security":"{addr}","options":["map",[["iface-id-ver","uid-{i}"],["requested-chassis","node1"]]],"external_ids":["map",[["namespace","bench"],["pod","true"]]]}}}}"#,
            i, i
        );
    }
    j.push_str("}}}");
    let frame = j.into_bytes();
    let schema = DatabaseSchema::from_file("/usr/share/ovn/ovn-nb.ovsschema")
        .ok()
        .map(Arc::new);
    for round in 0..3 {
        let t0 = Instant::now();
        let u: TableUpdates<RowUpdate2> =
            ovsdb::rpc::decode_result("monitor", &frame).expect("decode");
        let dec = t0.elapsed();
        let cache = Cache::new();
        if let Some(s) = &schema {
            cache.set_schema(s.clone());
        }
        let t0 = Instant::now();
        cache.apply(
            Updates::V2(u),
            ApplyMode::Snapshot,
            &["Logical_Switch_Port".into()],
        );
        let app = t0.elapsed();
        println!(
            "round {round}: {} MB decoded in {dec:?} ({:.0} MB/s), applied in {app:?}; {} rows",
            frame.len() / 1_000_000,
            frame.len() as f64 / 1e6 / dec.as_secs_f64(),
            cache.len("Logical_Switch_Port")
        );
    }
}
