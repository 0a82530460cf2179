//! Namespace annotation `k8s.ovn.org/acl-logging`.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::{parse_json, AnnotationError, ACL_LOGGING};

/// OVN ACL log severities (the `severity` column of NB `ACL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclSeverity {
    Alert,
    Warning,
    Notice,
    Info,
    Debug,
}

impl AclSeverity {
    pub fn as_str(&self) -> &'static str {
        match self {
            AclSeverity::Alert => "alert",
            AclSeverity::Warning => "warning",
            AclSeverity::Notice => "notice",
            AclSeverity::Info => "info",
            AclSeverity::Debug => "debug",
        }
    }

    fn parse(field: &str, s: &str) -> Result<Option<Self>, AnnotationError> {
        Ok(Some(match s {
            // Empty means "do not log this verdict".
            "" => return Ok(None),
            "alert" => AclSeverity::Alert,
            "warning" => AclSeverity::Warning,
            "notice" => AclSeverity::Notice,
            "info" => AclSeverity::Info,
            "debug" => AclSeverity::Debug,
            other => {
                return Err(AnnotationError::invalid(
                    ACL_LOGGING,
                    field,
                    other,
                    "expected alert, warning, notice, info or debug",
                ))
            }
        }))
    }
}

/// Severity for allowed and denied packets; `None` disables logging of that verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AclLogging {
    pub allow: Option<AclSeverity>,
    pub deny: Option<AclSeverity>,
}

#[derive(Deserialize)]
struct RawAclLogging {
    #[serde(default)]
    allow: Option<String>,
    #[serde(default)]
    deny: Option<String>,
}

/// Parses `{"allow":"notice","deny":"alert"}`; either key may be absent.
pub fn parse_acl_logging(text: &str) -> Result<AclLogging, AnnotationError> {
    let raw: RawAclLogging = parse_json(ACL_LOGGING, text)?;
    Ok(AclLogging {
        allow: AclSeverity::parse("allow", raw.allow.as_deref().unwrap_or(""))?,
        deny: AclSeverity::parse("deny", raw.deny.as_deref().unwrap_or(""))?,
    })
}

pub fn render_acl_logging(a: &AclLogging) -> String {
    let mut m = Map::new();
    if let Some(s) = a.allow {
        m.insert("allow".into(), json!(s.as_str()));
    }
    if let Some(s) = a.deny {
        m.insert("deny".into(), json!(s.as_str()));
    }
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_render() {
        let a = parse_acl_logging(r#"{"allow":"notice","deny":"alert"}"#).unwrap();
        assert_eq!(a.allow, Some(AclSeverity::Notice));
        assert_eq!(a.deny, Some(AclSeverity::Alert));
        assert_eq!(
            render_acl_logging(&a),
            r#"{"allow":"notice","deny":"alert"}"#
        );
        let d = parse_acl_logging(r#"{"deny":"debug"}"#).unwrap();
        assert_eq!(
            d,
            AclLogging {
                allow: None,
                deny: Some(AclSeverity::Debug)
            }
        );
        assert_eq!(parse_acl_logging(&render_acl_logging(&d)).unwrap(), d);
    }

    #[test]
    fn errors() {
        let e = parse_acl_logging(r#"{"allow":"loud"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(ACL_LOGGING) && e.contains("allow") && e.contains("loud"),
            "{e}"
        );
        assert!(parse_acl_logging("nope").is_err());
    }
}
