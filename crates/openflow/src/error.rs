//! Errors: malformed bytes, messages we cannot encode, errors the switch reports
//! (`OFPT_ERROR`, named by type and code) and connection failures.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Bytes from the switch that do not form a message we understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("{what}: bad length {len}")]
    BadLength { what: &'static str, len: usize },
    #[error("unsupported OpenFlow version {0:#04x}")]
    Version(u8),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message or structure of {0} bytes exceeds 65535")]
    TooLong(usize),
}

/// `ofp_error_type` of OpenFlow 1.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    HelloFailed,
    BadRequest,
    BadAction,
    BadInstruction,
    BadMatch,
    FlowModFailed,
    GroupModFailed,
    PortModFailed,
    TableModFailed,
    QueueOpFailed,
    SwitchConfigFailed,
    RoleRequestFailed,
    MeterModFailed,
    TableFeaturesFailed,
    /// `OFPET_EXPERIMENTER`: OVS reports Nicira extension errors this way.
    Experimenter(u32),
    Unknown(u16),
}

impl ErrorType {
    fn from_wire(t: u16, experimenter: Option<u32>) -> Self {
        match t {
            0 => ErrorType::HelloFailed,
            1 => ErrorType::BadRequest,
            2 => ErrorType::BadAction,
            3 => ErrorType::BadInstruction,
            4 => ErrorType::BadMatch,
            5 => ErrorType::FlowModFailed,
            6 => ErrorType::GroupModFailed,
            7 => ErrorType::PortModFailed,
            8 => ErrorType::TableModFailed,
            9 => ErrorType::QueueOpFailed,
            10 => ErrorType::SwitchConfigFailed,
            11 => ErrorType::RoleRequestFailed,
            12 => ErrorType::MeterModFailed,
            13 => ErrorType::TableFeaturesFailed,
            0xffff => ErrorType::Experimenter(experimenter.unwrap_or(0)),
            t => ErrorType::Unknown(t),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ErrorType::HelloFailed => "OFPET_HELLO_FAILED",
            ErrorType::BadRequest => "OFPET_BAD_REQUEST",
            ErrorType::BadAction => "OFPET_BAD_ACTION",
            ErrorType::BadInstruction => "OFPET_BAD_INSTRUCTION",
            ErrorType::BadMatch => "OFPET_BAD_MATCH",
            ErrorType::FlowModFailed => "OFPET_FLOW_MOD_FAILED",
            ErrorType::GroupModFailed => "OFPET_GROUP_MOD_FAILED",
            ErrorType::PortModFailed => "OFPET_PORT_MOD_FAILED",
            ErrorType::TableModFailed => "OFPET_TABLE_MOD_FAILED",
            ErrorType::QueueOpFailed => "OFPET_QUEUE_OP_FAILED",
            ErrorType::SwitchConfigFailed => "OFPET_SWITCH_CONFIG_FAILED",
            ErrorType::RoleRequestFailed => "OFPET_ROLE_REQUEST_FAILED",
            ErrorType::MeterModFailed => "OFPET_METER_MOD_FAILED",
            ErrorType::TableFeaturesFailed => "OFPET_TABLE_FEATURES_FAILED",
            ErrorType::Experimenter(_) => "OFPET_EXPERIMENTER",
            ErrorType::Unknown(_) => "unknown error type",
        }
    }

    fn code_name(self, code: u16) -> Option<&'static str> {
        let names: &[&str] = match self {
            ErrorType::HelloFailed => &["OFPHFC_INCOMPATIBLE", "OFPHFC_EPERM"],
            ErrorType::BadRequest => &[
                "OFPBRC_BAD_VERSION",
                "OFPBRC_BAD_TYPE",
                "OFPBRC_BAD_MULTIPART",
                "OFPBRC_BAD_EXPERIMENTER",
                "OFPBRC_BAD_EXP_TYPE",
                "OFPBRC_EPERM",
                "OFPBRC_BAD_LEN",
                "OFPBRC_BUFFER_EMPTY",
                "OFPBRC_BUFFER_UNKNOWN",
                "OFPBRC_BAD_TABLE_ID",
                "OFPBRC_IS_SLAVE",
                "OFPBRC_BAD_PORT",
                "OFPBRC_BAD_PACKET",
                "OFPBRC_MULTIPART_BUFFER_OVERFLOW",
            ],
            ErrorType::BadAction => &[
                "OFPBAC_BAD_TYPE",
                "OFPBAC_BAD_LEN",
                "OFPBAC_BAD_EXPERIMENTER",
                "OFPBAC_BAD_EXP_TYPE",
                "OFPBAC_BAD_OUT_PORT",
                "OFPBAC_BAD_ARGUMENT",
                "OFPBAC_EPERM",
                "OFPBAC_TOO_MANY",
                "OFPBAC_BAD_QUEUE",
                "OFPBAC_BAD_OUT_GROUP",
                "OFPBAC_MATCH_INCONSISTENT",
                "OFPBAC_UNSUPPORTED_ORDER",
                "OFPBAC_BAD_TAG",
                "OFPBAC_BAD_SET_TYPE",
                "OFPBAC_BAD_SET_LEN",
                "OFPBAC_BAD_SET_ARGUMENT",
            ],
            ErrorType::BadInstruction => &[
                "OFPBIC_UNKNOWN_INST",
                "OFPBIC_UNSUP_INST",
                "OFPBIC_BAD_TABLE_ID",
                "OFPBIC_UNSUP_METADATA",
                "OFPBIC_UNSUP_METADATA_MASK",
                "OFPBIC_BAD_EXPERIMENTER",
                "OFPBIC_BAD_EXP_TYPE",
                "OFPBIC_BAD_LEN",
                "OFPBIC_EPERM",
            ],
            ErrorType::BadMatch => &[
                "OFPBMC_BAD_TYPE",
                "OFPBMC_BAD_LEN",
                "OFPBMC_BAD_TAG",
                "OFPBMC_BAD_DL_ADDR_MASK",
                "OFPBMC_BAD_NW_ADDR_MASK",
                "OFPBMC_BAD_WILDCARDS",
                "OFPBMC_BAD_FIELD",
                "OFPBMC_BAD_VALUE",
                "OFPBMC_BAD_MASK",
                "OFPBMC_BAD_PREREQ",
                "OFPBMC_DUP_FIELD",
                "OFPBMC_EPERM",
            ],
            ErrorType::FlowModFailed => &[
                "OFPFMFC_UNKNOWN",
                "OFPFMFC_TABLE_FULL",
                "OFPFMFC_BAD_TABLE_ID",
                "OFPFMFC_OVERLAP",
                "OFPFMFC_EPERM",
                "OFPFMFC_BAD_TIMEOUT",
                "OFPFMFC_BAD_COMMAND",
                "OFPFMFC_BAD_FLAGS",
            ],
            _ => &[],
        };
        names.get(usize::from(code)).copied()
    }
}

/// An error the switch reported for one of our requests (`OFPT_ERROR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct SwitchError {
    pub kind: ErrorType,
    /// The raw type and code, as on the wire.
    pub typ: u16,
    pub code: u16,
}

impl SwitchError {
    pub fn from_wire(typ: u16, code: u16, experimenter: Option<u32>) -> Self {
        SwitchError {
            kind: ErrorType::from_wire(typ, experimenter),
            typ,
            code,
        }
    }
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.name())?;
        match self.kind.code_name(self.code) {
            Some(c) => write!(f, "/{c}")?,
            None => write!(f, "/code {}", self.code)?,
        }
        if let ErrorType::Experimenter(x) = self.kind {
            write!(f, " (experimenter {x:#010x})")?;
        }
        write!(f, " (type {}, code {})", self.typ, self.code)
    }
}

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OpenFlow connection to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OpenFlow I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("OpenFlow message from the switch: {0}")]
    Decode(#[from] DecodeError),
    #[error("OpenFlow message: {0}")]
    Encode(#[from] EncodeError),
    #[error("the switch does not speak OpenFlow 1.3 (its HELLO: version {version:#04x}, bitmap {bitmap:?})")]
    Version { version: u8, bitmap: Option<u32> },
    #[error("switch rejected the request: {0}")]
    Switch(#[from] SwitchError),
    #[error("OpenFlow connection closed")]
    Closed,
    #[error("no answer from the switch within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}
