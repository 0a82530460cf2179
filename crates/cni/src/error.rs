//! CNI error objects and the well-known codes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Error codes: 0-99 are the CNI spec's well-known codes, 100+ are ovnk's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: the requested cniVersion is not supported.
    IncompatibleVersion,
    /// 2: a network configuration field is not supported.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: a necessary environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: an I/O failure (e.g. reading stdin).
    IoFailure,
    /// 6: content (stdin, prevResult) could not be decoded.
    DecodeFailure,
    /// 7: the network configuration is invalid.
    InvalidNetworkConfig,
    /// 11: transient failure; the runtime should retry later.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot service ADD requests now.
    PluginNotAvailable,
    /// 51: STATUS: not available, and existing containers may have limited connectivity.
    PluginNotAvailableLimitedConnectivity,
    /// 100: the node agent (`ovnk node`) could not be reached.
    NodeAgentUnreachable,
    /// 101: the request did not finish in time.
    Timeout,
    /// 102: the node agent answered something that is not a CNI answer.
    ProtocolError,
    /// 103: the node agent failed to carry out the request.
    NodeAgentFailure,
    /// Any other code received from elsewhere.
    Other(u32),
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodeFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::PluginNotAvailableLimitedConnectivity => 51,
            ErrorCode::NodeAgentUnreachable => 100,
            ErrorCode::Timeout => 101,
            ErrorCode::ProtocolError => 102,
            ErrorCode::NodeAgentFailure => 103,
            ErrorCode::Other(n) => n,
        }
    }

    pub fn from_u32(n: u32) -> Self {
        match n {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::IoFailure,
            6 => ErrorCode::DecodeFailure,
            7 => ErrorCode::InvalidNetworkConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::PluginNotAvailable,
            51 => ErrorCode::PluginNotAvailableLimitedConnectivity,
            100 => ErrorCode::NodeAgentUnreachable,
            101 => ErrorCode::Timeout,
            102 => ErrorCode::ProtocolError,
            103 => ErrorCode::NodeAgentFailure,
            n => ErrorCode::Other(n),
        }
    }
}

/// A CNI error: printed on stdout as `{"cniVersion","code","msg","details"}`
/// with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {}: {msg}{}", code.as_u32(), if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

#[derive(Serialize, Deserialize)]
struct WireError {
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    cni_version: Option<String>,
    code: u32,
    msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnvironment, msg)
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidNetworkConfig, msg)
    }

    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::DecodeFailure, msg)
    }

    /// For handlers: the agent failed for a reason of its own.
    pub fn failure(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::NodeAgentFailure, msg)
    }

    /// The error object, for the given cniVersion.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code.as_u32(),
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }

    /// Parses an error object (from the node agent).
    pub fn from_json(bytes: &[u8]) -> Option<CniError> {
        let w: WireError = serde_json::from_slice(bytes).ok()?;
        Some(CniError {
            code: ErrorCode::from_u32(w.code),
            msg: w.msg,
            details: w.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for n in [1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 103, 999] {
            assert_eq!(ErrorCode::from_u32(n).as_u32(), n);
        }
    }

    #[test]
    fn json_shape() {
        let e = CniError::invalid_env("CNI_NETNS is required").with_details("ADD");
        let v = e.to_json("1.0.0");
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","code":4,"msg":"CNI_NETNS is required","details":"ADD"})
        );
        assert_eq!(CniError::from_json(v.to_string().as_bytes()), Some(e));
        let plain = CniError::decode("bad").to_json("0.4.0");
        assert!(plain.get("details").is_none());
        assert_eq!(CniError::from_json(b"nope"), None);
    }
}
