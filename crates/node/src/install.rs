//! Installing the CNI plugin: the network configuration list and the binary, each
//! written to a temporary name and renamed, so the runtime never sees half a file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::NodeError;

/// The plugin binary's name (the conflist's `type`).
pub const PLUGIN_NAME: &str = "ovn-k8s-cni-overlay";
/// The configuration file name (sorted early so runtimes pick it).
pub const CONFLIST_NAME: &str = "10-ovn-kubernetes.conflist";

/// The network configuration list pointing the shim at our socket.
pub fn conflist(server_socket: &Path, mtu: u32) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": ovnk_cni::LATEST_VERSION,
        "name": "ovn-kubernetes",
        "plugins": [{
            "type": PLUGIN_NAME,
            "serverSocket": server_socket.display().to_string(),
            "mtu": mtu,
        }]
    })
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> NodeError {
    move |e| NodeError::Io(format!("{what}: {e}"))
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<PathBuf, NodeError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &dest)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(NodeError::Io(format!("write {}: {e}", dest.display())));
    }
    Ok(dest)
}

/// Writes `<dir>/10-ovn-kubernetes.conflist`.
pub fn install_conflist(dir: &Path, server_socket: &Path, mtu: u32) -> Result<PathBuf, NodeError> {
    let text = conflist(server_socket, mtu).to_string();
    write_atomic(dir, CONFLIST_NAME, text.as_bytes(), 0o644)
}

/// Copies the plugin binary to `<dir>/ovn-k8s-cni-overlay`.
pub fn install_plugin(source: &Path, dir: &Path) -> Result<PathBuf, NodeError> {
    let bytes = std::fs::read(source).map_err(io_err(format!(
        "read CNI plugin binary {}",
        source.display()
    )))?;
    write_atomic(dir, PLUGIN_NAME, &bytes, 0o755)
}

/// `ovn-k8s-cni-overlay` beside the running executable.
pub fn default_plugin_source() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(PLUGIN_NAME)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_conflist_and_binary() {
        let d = tempfile::tempdir().unwrap();
        let conf =
            install_conflist(&d.path().join("net.d"), Path::new("/run/x.sock"), 1400).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
        assert_eq!(v["plugins"][0]["type"], PLUGIN_NAME);
        assert_eq!(v["plugins"][0]["serverSocket"], "/run/x.sock");
        // The shim must accept what we write.
        ovnk_cni::NetConf::from_value({
            let mut p = v["plugins"][0].clone();
            p["cniVersion"] = v["cniVersion"].clone();
            p["name"] = v["name"].clone();
            p
        })
        .unwrap();

        let src = d.path().join("src-bin");
        std::fs::write(&src, b"#!/bin/sh\n").unwrap();
        let bin = install_plugin(&src, &d.path().join("bin")).unwrap();
        let mode = std::fs::metadata(&bin).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let e = install_plugin(&d.path().join("missing"), d.path()).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
