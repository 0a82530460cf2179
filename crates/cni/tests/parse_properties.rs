//! Whatever the runtime sends, parsing answers with a spec error code, never a panic.

use std::collections::BTreeMap;

use ovnk_cni::{CniRequest, CniResult, ErrorCode, SpecVersion};
use proptest::prelude::*;
use serde_json::json;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(|s| json!(s)),
        Just(json!("1.0.0")),
        Just(json!("10.0.0.1/24")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("cniVersion".to_string()),
                    Just("name".to_string()),
                    Just("type".to_string()),
                    Just("prevResult".to_string()),
                    Just("ips".to_string()),
                    Just("address".to_string()),
                    Just("interface".to_string()),
                    Just("cni.dev/valid-attachments".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn env() -> impl Strategy<Value = BTreeMap<String, String>> {
    let keys = prop_oneof![
        Just("CNI_COMMAND"),
        Just("CNI_CONTAINERID"),
        Just("CNI_NETNS"),
        Just("CNI_IFNAME"),
        Just("CNI_ARGS"),
        Just("CNI_PATH"),
    ];
    let values = prop_oneof![
        Just("ADD".to_string()),
        Just("DEL".to_string()),
        Just("CHECK".to_string()),
        Just("GC".to_string()),
        Just("STATUS".to_string()),
        Just("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b".to_string()),
        ".{0,20}",
    ];
    proptest::collection::btree_map(keys.prop_map(String::from), values, 0..6)
}

proptest! {
    #[test]
    fn request_parsing_never_panics(env in env(), config in json_value(), raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let allowed = [ErrorCode::IncompatibleVersion, ErrorCode::InvalidEnvironment, ErrorCode::DecodeFailure, ErrorCode::InvalidNetworkConfig];
        for bytes in [config.to_string().into_bytes(), raw] {
            if let Err(e) = CniRequest::parse(&env, &bytes) {
                prop_assert!(allowed.contains(&e.code), "{e}");
                prop_assert!(!e.msg.is_empty());
            }
        }
    }

    #[test]
    fn result_parsing_never_panics(v in json_value()) {
        if let Ok(r) = CniResult::from_json(&v) {
            // Anything we accept renders and parses back the same way.
            let again = CniResult::from_json(&r.render(SpecVersion::V1_1_0));
            prop_assert_eq!(again.ok(), Some(r));
        }
    }
}
