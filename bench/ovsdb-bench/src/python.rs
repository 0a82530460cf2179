//! Runs python_idl.py (the OVS Python IDL) with the system interpreter and reads its JSON.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub const PYTHON: &str = "/usr/bin/python3";

pub struct PyResult {
    pub seconds: f64,
    pub rows: u64,
    pub rss_delta_bytes: i64,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python_idl.py")
}

/// Whether the system Python has the OVS IDL.
pub fn available() -> bool {
    Command::new(PYTHON)
        .args(["-c", "import ovs.db.idl"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run(remote: &str, schema: &str, phase: &str, n: usize) -> Result<PyResult> {
    let out = Command::new(PYTHON)
        .arg(script())
        .args([remote, schema, phase, &n.to_string()])
        .output()
        .context("running python_idl.py")?;
    if !out.status.success() {
        bail!(
            "python_idl.py {phase} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("python_idl.py output is not JSON")?;
    Ok(PyResult {
        seconds: j["seconds"].as_f64().context("seconds")?,
        rows: j["rows"].as_u64().unwrap_or(0),
        rss_delta_bytes: j["rss_delta_bytes"].as_i64().unwrap_or(0),
    })
}
