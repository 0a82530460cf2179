//! A minimal JSON-RPC caller for tests: the server under test is real; this side is kept
//! trivial on purpose so that it cannot share a bug with the ovsdb client.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use ovsdb::{DatabaseSchema, Row, Uuid, Value};
use serde_json::{json, Value as Json};

pub fn call(sock: &Path, method: &str, params: Json) -> Json {
    let mut s = UnixStream::connect(sock).expect("connect");
    let req = json!({"id": 1, "method": method, "params": params});
    s.write_all(req.to_string().as_bytes()).expect("write");
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(s)).into_iter::<Json>();
    loop {
        let v = de.next().expect("a reply").expect("JSON");
        if v["id"] == 1 {
            assert!(v["error"].is_null(), "{method} failed: {v}");
            return v["result"].clone();
        }
    }
}

/// A transaction; panics if any operation failed.
pub fn transact(sock: &Path, db: &str, ops: Json) -> Json {
    let mut params = vec![json!(db)];
    params.extend(ops.as_array().expect("ops").iter().cloned());
    let r = call(sock, "transact", Json::Array(params));
    for (i, res) in r.as_array().expect("results").iter().enumerate() {
        assert!(res.get("error").is_none(), "op {i} failed: {r}");
    }
    r
}

pub fn live_schema(sock: &Path, db: &str) -> DatabaseSchema {
    DatabaseSchema::from_json(&call(sock, "get_schema", json!([db]))).expect("schema parses")
}

/// Every row of `table` as (uuid, row normalized to the column types of `schema`).
pub fn select_all(sock: &Path, schema: &DatabaseSchema, table: &str) -> Vec<(Uuid, Row)> {
    let r = transact(
        sock,
        &schema.name,
        json!([{"op": "select", "table": table, "where": []}]),
    );
    let ts = schema.table(table).expect("table in schema");
    r[0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|j| {
            let mut row: Row = serde_json::from_value(j.clone()).expect("row decodes");
            let uuid = row
                .remove("_uuid")
                .and_then(|v| v.as_uuid())
                .expect("_uuid");
            row.remove("_version");
            ts.normalize_row(&mut row);
            (uuid, row)
        })
        .collect()
}

pub fn uuid_json(u: Uuid) -> Json {
    json!(["uuid", u.to_string()])
}

#[allow(dead_code)]
pub fn value(j: Json) -> Value {
    serde_json::from_value(j).expect("value")
}
