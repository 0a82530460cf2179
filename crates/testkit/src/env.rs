use std::path::{Path, PathBuf};

/// The installed OVN Northbound schema (Debian's ovn-common).
pub const OVN_NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
/// The installed OVN Southbound schema.
pub const OVN_SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
/// The installed Open_vSwitch schema (Debian's openvswitch-common).
pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// True when env `CI` is `true` (or `1`): a missing prerequisite must fail, not skip.
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Ok("true") | Ok("1")
    )
}

/// True when the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds an executable by name on PATH, then in the sbin directories (ovsdb-server and
/// ovs-vswitchd live in /usr/sbin, which a non-root PATH often lacks).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Checks a test's prerequisites. Each entry is `"root"` (effective uid 0), a path to a file
/// that must exist (anything containing `/`, e.g. a schema), or the name of a binary.
///
/// Returns true when everything is there. Otherwise prints `SKIP: <why>` and returns false,
/// except under `CI=true`, where it panics with the same reason: CI must never skip silently.
pub fn require_env(what: &[&str]) -> bool {
    match missing_prerequisites(what) {
        None => true,
        Some(why) if is_ci() => panic!("CI=true and a test prerequisite is missing: {why}"),
        Some(why) => {
            println!("SKIP: {why}");
            false
        }
    }
}

/// What is missing among `what`, as one line, or None when everything is there.
fn missing_prerequisites(what: &[&str]) -> Option<String> {
    let missing: Vec<String> = what
        .iter()
        .filter_map(|w| match *w {
            "root" if !is_root() => Some("not running as root".to_string()),
            "root" => None,
            p if p.contains('/') && !Path::new(p).exists() => Some(format!("file {p} missing")),
            p if p.contains('/') => None,
            bin if find_binary(bin).is_none() => Some(format!("binary {bin} not found")),
            _ => None,
        })
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_missing_prerequisite() {
        assert_eq!(missing_prerequisites(&["sh", "/"]), None);
        let why = missing_prerequisites(&["sh", "no-such-binary-x1", "/no/such/file"])
            .unwrap_or_default();
        assert_eq!(
            why,
            "binary no-such-binary-x1 not found, file /no/such/file missing"
        );
        let root = missing_prerequisites(&["root"]);
        assert_eq!(root.is_none(), is_root());
    }

    #[test]
    fn require_env_skips_or_panics_under_ci() {
        let r = std::panic::catch_unwind(|| require_env(&["no-such-binary-x1"]));
        if is_ci() {
            assert!(
                r.is_err(),
                "CI=true must turn a missing prerequisite into a failure"
            );
        } else {
            assert!(matches!(r, Ok(false)));
        }
        assert!(require_env(&["sh"]));
    }
}
