#!/usr/bin/python3
"""The OVS Python IDL (ovs.db.idl) doing the benchmark's work, timed from inside.

Run with the system interpreter (/usr/bin/python3), which has python3-openvswitch:
    python_idl.py REMOTE SCHEMA PHASE N
PHASE is bulk (one transaction inserting N ports into a new switch), single (N
transactions of one port each, added to the existing switch "bench") or sync (connect and
replicate Logical_Switch + Logical_Switch_Port until N ports are cached).
Prints one JSON object: {"phase", "seconds", "rows", "rss_delta_bytes"}.
The rows are the same as the Rust side's (see port_fields below and workload.rs).
"""
import json
import sys
import time

import ovs.db.idl
import ovs.poller


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def port_fields(i):
    a, b, c = (i >> 16) & 255, (i >> 8) & 255, i & 255
    addr = "0a:58:0a:%02x:%02x:%02x 10.%d.%d.%d" % (a, b, c, a, b, c)
    return {
        "name": "bench_pod%d" % i,
        "addresses": [addr],
        "port_security": [addr],
        "options": {"requested-chassis": "node1", "iface-id-ver": "uid-%d" % i},
        "external_ids": {"namespace": "bench", "pod": "true"},
    }


def run_until(idl, done, timeout=600):
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the IDL")
        idl.run()
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.timer_wait(100)
        poller.block()


def connect(remote, schema):
    helper = ovs.db.idl.SchemaHelper(location=schema)
    helper.register_table("Logical_Switch")
    helper.register_table("Logical_Switch_Port")
    idl = ovs.db.idl.Idl(remote, helper, leader_only=False)
    seq = idl.change_seqno
    run_until(idl, lambda: idl.change_seqno != seq and idl.has_ever_connected())
    return idl


def set_port(row, i):
    for k, v in port_fields(i).items():
        setattr(row, k, v)


def bulk(remote, schema, n):
    idl = connect(remote, schema)
    start = time.perf_counter()
    txn = ovs.db.idl.Transaction(idl)
    ls = txn.insert(idl.tables["Logical_Switch"])
    ls.name = "bench"
    ports = []
    for i in range(n):
        p = txn.insert(idl.tables["Logical_Switch_Port"])
        set_port(p, i)
        ports.append(p)
    ls.ports = ports
    status = txn.commit_block()
    secs = time.perf_counter() - start
    if status != ovs.db.idl.Transaction.SUCCESS:
        raise SystemExit("bulk transaction failed: %s %s" % (status, txn.get_error()))
    return secs, n, 0


def single(remote, schema, n):
    idl = connect(remote, schema)
    switches = [r for r in idl.tables["Logical_Switch"].rows.values() if r.name == "bench"]
    if not switches:
        raise SystemExit("switch 'bench' missing")
    ls = switches[0]
    start = time.perf_counter()
    for i in range(n):
        txn = ovs.db.idl.Transaction(idl)
        p = txn.insert(idl.tables["Logical_Switch_Port"])
        set_port(p, i)
        ls.addvalue("ports", p.uuid)
        status = txn.commit_block()
        if status != ovs.db.idl.Transaction.SUCCESS:
            raise SystemExit("transaction %d failed: %s %s" % (i, status, txn.get_error()))
    return time.perf_counter() - start, n, 0


def sync(remote, schema, n):
    before = rss_bytes()
    start = time.perf_counter()
    helper = ovs.db.idl.SchemaHelper(location=schema)
    helper.register_table("Logical_Switch")
    helper.register_table("Logical_Switch_Port")
    idl = ovs.db.idl.Idl(remote, helper, leader_only=False)
    lsps = idl.tables["Logical_Switch_Port"].rows
    run_until(idl, lambda: len(lsps) >= n)
    secs = time.perf_counter() - start
    rows = len(lsps) + len(idl.tables["Logical_Switch"].rows)
    return secs, rows, rss_bytes() - before


def main():
    remote, schema, phase, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    secs, rows, rss = {"bulk": bulk, "single": single, "sync": sync}[phase](remote, schema, n)
    print(json.dumps({"phase": phase, "seconds": secs, "rows": rows, "rss_delta_bytes": rss}))


if __name__ == "__main__":
    main()
