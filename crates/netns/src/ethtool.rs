//! The two per-interface knobs the userspace datapath needs that netlink does not
//! cover: TX checksum offload (ethtool ioctl) and IPv6 (sysctl).

use std::io::Write;

use crate::NetNsError;

/// `ETHTOOL_STXCSUM`: the legacy command the kernel maps onto all TX checksum
/// features (what `ethtool -K <if> tx off` changes).
const ETHTOOL_STXCSUM: u32 = 0x0000_0017;
const ETHTOOL_GTXCSUM: u32 = 0x0000_0016;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Turns TX checksum offload off on `ifname` in the calling thread's namespace.
///
/// Veth frames carry partial checksums that the userspace datapath forwards as they
/// are; TCP then fails silently while ping works (LAB.md pitfall 1).
pub fn disable_tx_checksum(ifname: &str) -> Result<(), NetNsError> {
    ethtool_value(ifname, ETHTOOL_STXCSUM, 0).map(|_| ())
}

/// Reads whether TX checksumming is on (`ETHTOOL_GTXCSUM`), for CHECK and tests.
pub fn tx_checksum_enabled(ifname: &str) -> Result<bool, NetNsError> {
    ethtool_value(ifname, ETHTOOL_GTXCSUM, 0).map(|v| v != 0)
}

/// One `SIOCETHTOOL` call with a `struct ethtool_value`; returns its `data`.
fn ethtool_value(ifname: &str, cmd: u32, data: u32) -> Result<u32, NetNsError> {
    let err = |reason: String| NetNsError::Ethtool {
        ifname: ifname.to_string(),
        reason,
    };
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(err("invalid interface name".into()));
    }
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    for (dst, src) in req.name.iter_mut().zip(ifname.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket syscall; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error().to_string()));
    }
    // SAFETY: `req` is a properly laid out `struct ifreq` whose data pointer points to a
    // live `ethtool_value` for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq) };
    let io_err = std::io::Error::last_os_error();
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err(format!("SIOCETHTOOL cmd {cmd:#x}: {io_err}")));
    }
    Ok(value.data)
}

/// Writes `net.ipv6.conf.<ifname>.disable_ipv6 = 1` in the calling thread's namespace.
///
/// The node kernel would otherwise answer neighbour discovery on ports that OVS owns
/// (LAB.md pitfall 3). A kernel without IPv6 has nothing to disable.
pub fn disable_ipv6(ifname: &str) -> Result<(), NetNsError> {
    if ifname.contains('/') || ifname.contains("..") {
        return Err(NetNsError::Sysctl {
            key: format!("net.ipv6.conf.{ifname}.disable_ipv6"),
            reason: "invalid interface name".into(),
        });
    }
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::OpenOptions::new().write(true).open(&path) {
        Ok(mut f) => f.write_all(b"1").map_err(|e| NetNsError::Sysctl {
            key: path,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetNsError::Sysctl {
            key: path,
            reason: e.to_string(),
        }),
    }
}
