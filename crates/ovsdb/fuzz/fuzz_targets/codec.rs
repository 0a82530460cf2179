//! Fuzzes the framer and every decoder fed by the network: `cargo +nightly fuzz run codec`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovsdb::framer::Framer;
use ovsdb::update::decode_notice;
use ovsdb::{ApplyMode, Cache, Transaction, Value};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so splits at every position get explored.
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk.max(1));
    let mut framer = Framer::new(64 * 1024);
    let cache = Cache::new();
    let txn = Transaction::new("db");
    for part in rest.chunks(chunk) {
        framer.extend(part);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    let _ = serde_json::from_slice::<Value>(&frame);
                    let _ = ovsdb::txn::parse_transact_reply(&txn, &frame);
                    for m in ["update", "update2", "update3"] {
                        match decode_notice(m, &frame) {
                            Ok(ovsdb::update::Notice::Update { updates, .. })
                            | Ok(ovsdb::update::Notice::Update3 { updates, .. }) => {
                                let _ = cache.apply(updates, ApplyMode::Delta, &[]);
                            }
                            _ => {}
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
