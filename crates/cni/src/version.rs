//! CNI spec versions this plugin speaks.

use crate::{CniError, ErrorCode};

/// Every cniVersion accepted in a network configuration.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version (used for VERSION and errors about versions).
pub const LATEST_VERSION: &str = "1.1.0";

/// The result shape differs between 0.4.0 (`version` in each IP) and 1.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SpecVersion {
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl SpecVersion {
    pub fn parse(s: &str) -> Result<SpecVersion, CniError> {
        match s {
            "0.4.0" => Ok(SpecVersion::V0_4_0),
            "1.0.0" => Ok(SpecVersion::V1_0_0),
            "1.1.0" => Ok(SpecVersion::V1_1_0),
            other => Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "unsupported cniVersion {other:?}; supported versions: {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            )),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_and_gc(&self) -> bool {
        *self >= SpecVersion::V1_1_0
    }
}

/// The VERSION command's answer.
pub fn version_info() -> serde_json::Value {
    serde_json::json!({
        "cniVersion": LATEST_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}
