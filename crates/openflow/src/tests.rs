//! Encoding tests against bytes captured from `ovs-ofctl -O OpenFlow13 add-flow` /
//! `del-flows` / `dump-aggregate` (OVS 3.1, through a logging proxy in front of a
//! bridge's mgmt socket), each with the ovs-ofctl command line it came from.

use super::*;
use std::net::Ipv4Addr;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const P: u32 = 5;
const E: u32 = 1;

/// (ovs-ofctl flow, our FlowMod, the bytes ovs-ofctl sent with xid 6)
fn fixtures() -> Vec<(&'static str, FlowMod, &'static str)> {
    let ct_commit = |mark| {
        Action::Ct(Ct {
            commit: true,
            zone: 64000,
            table: None,
            actions: vec![Action::SetField(SetField::CtMark(mark))],
        })
    };
    vec![
        (
            "table=0,priority=100,in_port=LOCAL,ip,actions=ct(commit,zone=64000,exec(set_field:0x2->ct_mark)),output:1",
            FlowMod::add(&Flow::new(0, 100, 0, Match::new().in_port(port::LOCAL).ipv4(), vec![ct_commit(2), Action::Output(E)])),
            "040e008800000006000000000000000000000000000000000000000000000064ffffffffffffffffffffffff000000000001001280000004fffffffe80000a0208000000000000000004004000000000ffff0028000023200023000100000000fa00ff0000000000001900100001d604000000020000000000000010000000010000000000000000",
        ),
        (
            "table=0,priority=0,actions=NORMAL",
            FlowMod::add(&Flow::new(0, 0, 0, Match::new(), vec![Action::Output(port::NORMAL)])),
            "040e005000000006000000000000000000000000000000000000000000000000ffffffffffffffffffffffff000000000001000400000000000400180000000000000010fffffffa0000000000000000",
        ),
        (
            "table=0,priority=10,in_port=1,arp,actions=output:LOCAL,output:5",
            FlowMod::add(&Flow::new(0, 10, 0, Match::new().in_port(E).arp(), vec![Action::Output(port::LOCAL), Action::Output(P)])),
            "040e00700000000600000000000000000000000000000000000000000000000affffffffffffffffffffffff0000000000010012800000040000000180000a020806000000000000000400280000000000000010fffffffe000000000000000000000010000000050000000000000000",
        ),
        (
            "cookie=0x1234,table=0,priority=110,in_port=1,tcp,nw_dst=172.18.0.2,tp_dst=30080,actions=output:5",
            FlowMod::add(&Flow::new(
                0,
                110,
                0x1234,
                Match::new().in_port(E).ipv4().ipv4_dst(Ipv4Addr::new(172, 18, 0, 2), 32).tp_dst(L4Proto::Tcp, Masked::exact(30080)),
                vec![Action::Output(P)],
            )),
            "040e00700000000600000000000012340000000000000000000000000000006effffffffffffffffffffffff0000000000010025800000040000000180000a02080080001804ac120002800014010680001c027580000000000400180000000000000010000000050000000000000000",
        ),
        (
            "table=0,priority=50,in_port=1,ip,actions=ct(table=1,zone=64000)",
            FlowMod::add(&Flow::new(0, 50, 0, Match::new().in_port(E).ipv4(), vec![Action::Ct(Ct { commit: false, zone: 64000, table: Some(1), actions: vec![] })])),
            "040e006800000006000000000000000000000000000000000000000000000032ffffffffffffffffffffffff0000000000010012800000040000000180000a0208000000000000000004002000000000ffff0018000023200023000000000000fa00010000000000",
        ),
        (
            "table=1,priority=100,ct_state=+trk+est,ct_mark=0x1,ip,actions=output:5",
            FlowMod::add(&Flow::new(
                1,
                100,
                0,
                Match::new().ipv4().ct_state(ct_state::TRK | ct_state::EST, ct_state::TRK | ct_state::EST).ct_mark(1),
                vec![Action::Output(P)],
            )),
            "040e006800000006000000000000000000000000000000000100000000000064ffffffffffffffffffffffff000000000001001e80000a0208000001d30800000022000000220001d604000000010000000400180000000000000010000000050000000000000000",
        ),
        (
            "table=0,priority=5,ipv6,ipv6_dst=fd00::1,udp6,tp_dst=0x7000/0xf000,actions=goto_table:1",
            FlowMod {
                instructions: vec![Instruction::GotoTable(1)],
                ..FlowMod::add(&Flow::new(
                    0,
                    5,
                    0,
                    Match::new().ipv6().ipv6_dst("fd00::1".parse().unwrap(), 128).tp_dst(L4Proto::Udp, Masked::with_mask(0x7000, 0xf000)),
                    vec![],
                ))
            },
            "040e006800000006000000000000000000000000000000000000000000000005ffffffffffffffffffffffff000000000001002b80000a0286dd80003610fd0000000000000000000000000000018000140111800021047000f00000000000000001000801000000",
        ),
        (
            "table=0,priority=5,ip,nw_src=10.0.0.0/8,udp,tp_dst=0x7000/0xf000,actions=resubmit(,2)",
            FlowMod::add(&Flow::new(
                0,
                5,
                0,
                Match::new().ipv4().ipv4_src(Ipv4Addr::new(10, 0, 0, 0), 8).tp_dst(L4Proto::Udp, Masked::with_mask(0x7000, 0xf000)),
                vec![Action::Resubmit { table: 2 }],
            )),
            "040e007000000006000000000000000000000000000000000000000000000005ffffffffffffffffffffffff000000000001002380000a020800800017080a000000ff0000008000140111800021047000f00000000000000004001800000000ffff001000002320000efff802000000",
        ),
        (
            "del-flows cookie=0xab00000000000000/0xff00000000000000",
            FlowMod::delete_by_cookie(0xab00_0000_0000_0000, 0xff00_0000_0000_0000),
            "040e003800000006ab00000000000000ff00000000000000ff03000000008000ffffffffffffffffffffffff000000000001000400000000",
        ),
        (
            "--strict del-flows table=0,priority=10,in_port=1,arp",
            FlowMod::delete_strict(&Flow::new(0, 10, 0, Match::new().in_port(E).arp(), vec![Action::Output(port::LOCAL)])),
            "040e00480000000600000000000000000000000000000000000400000000000affffffffffffffffffffffff0000000000010012800000040000000180000a020806000000000000",
        ),
    ]
}

#[test]
fn flow_mods_encode_like_ovs_ofctl_and_decode_back() {
    for (what, fm, want) in fixtures() {
        let msg = Message::FlowMod(fm.clone());
        let got = msg.encode(6).expect("encode");
        assert_eq!(hex(&got), want, "{what}");
        let (h, back) = Message::decode(&unhex(want)).expect(what);
        assert_eq!((h.version, h.typ, h.xid), (4, 14, 6), "{what}");
        assert_eq!(back, msg, "{what}");
    }
}

#[test]
fn aggregate_and_hello_encode_like_ovs_ofctl() {
    // dump-aggregate cookie=0x1234/-1
    let req = Message::AggregateRequest(AggregateRequest::by_cookie(0x1234, u64::MAX));
    let want = "04120038000000060002000000000000ff000000ffffffffffffffff000000000000000000001234ffffffffffffffff0001000400000000";
    assert_eq!(hex(&req.encode(6).unwrap()), want);
    assert_eq!(Message::decode(&unhex(want)).unwrap().1, req);
    let hello = Message::Hello {
        versions: Some(1 << OFP_VERSION_1_3),
    };
    assert_eq!(
        hex(&hello.encode(1).unwrap()),
        "04000010000000010001000800000010"
    );
    let reply = Message::AggregateReply(AggregateStats {
        packet_count: 3,
        byte_count: 300,
        flow_count: 11,
    });
    assert_eq!(Message::decode(&reply.encode(9).unwrap()).unwrap().1, reply);
}

#[test]
fn hello_negotiation() {
    // OVS 3.1 offers 1.0-1.5 as a bitmap in a version-6 HELLO.
    let (h, m) = Message::decode(&unhex("06000010000000010001000800000072")).unwrap();
    let Message::Hello { versions } = m else {
        panic!("{m:?}")
    };
    assert!(negotiate(h.version, versions));
    assert!(!negotiate(6, Some(0x02)));
    assert!(negotiate(4, None));
    assert!(!negotiate(1, None));
}

#[test]
fn errors_are_named() {
    // OFPT_ERROR, BAD_MATCH / BAD_PREREQ, with the start of the request as data.
    let (_, m) = Message::decode(&unhex("04010010000000070004000901020304")).unwrap();
    let Message::Error(e) = m else {
        panic!("{m:?}")
    };
    let err = e.error();
    assert_eq!(err.kind, ErrorType::BadMatch);
    assert_eq!(
        err.to_string(),
        "OFPET_BAD_MATCH/OFPBMC_BAD_PREREQ (type 4, code 9)"
    );
    let nx = SwitchError::from_wire(0xffff, 0x1234, Some(NX_VENDOR_ID));
    assert_eq!(nx.kind, ErrorType::Experimenter(NX_VENDOR_ID));
    assert!(nx.to_string().contains("OFPET_EXPERIMENTER"), "{nx}");
    let wrapped = Error::Switch(err);
    assert!(wrapped.to_string().contains("OFPBMC_BAD_PREREQ"));
}

/// A tiny deterministic generator, so the malformed-input test needs no extra crate.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    let mut samples: Vec<Vec<u8>> = fixtures().iter().map(|(_, _, h)| unhex(h)).collect();
    samples.push(unhex("04120038000000060002000000000000ff000000ffffffffffffffff000000000000000000001234ffffffffffffffff0001000400000000"));
    let mut rng = Lcg(42);
    for s in &samples {
        // Every truncation, with the header length fixed up or not.
        for n in 0..s.len() {
            let _ = Message::decode(&s[..n]);
            let mut t = s[..n].to_vec();
            if n >= 4 {
                t[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            }
            let _ = Message::decode(&t);
        }
        // Random corruption of bytes after the header (lengths, types, fields).
        for _ in 0..2000 {
            let mut t = s.clone();
            for _ in 0..(1 + rng.next() % 4) {
                let i = 8 + (rng.next() as usize) % (t.len() - 8);
                t[i] = rng.next() as u8;
            }
            let _ = Message::decode(&t);
        }
    }
    assert!(matches!(
        Message::decode(&unhex("0400000400000000")),
        Err(DecodeError::BadLength { .. })
    ));
    assert!(matches!(
        Message::decode(&unhex("0102000800000000")),
        Err(DecodeError::Version(1))
    ));
}

#[test]
fn ovs_ofctl_reads_our_bytes() {
    // Independent decoder: ovs-ofctl ofp-print on what we encode.
    if !testkit::require_env(&["ovs-ofctl"]) {
        return;
    }
    for (what, fm, _) in fixtures() {
        let bytes = Message::FlowMod(fm).encode(6).unwrap();
        let out = std::process::Command::new("ovs-ofctl")
            .args(["ofp-print", &hex(&bytes)])
            .output()
            .expect("ovs-ofctl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{what}: {text}");
        assert!(!text.contains("***"), "{what}: ovs-ofctl complains: {text}");
        assert!(text.contains("OFPT_FLOW_MOD (OF1.3)"), "{what}: {text}");
    }
}
