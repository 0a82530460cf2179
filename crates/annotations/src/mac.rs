use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// A 48-bit Ethernet address, printed as lower-case `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':' or '-'")]
pub struct MacParseError(pub String);

impl MacAddr {
    /// The locally administered prefix OVN-Kubernetes puts in front of derived MACs.
    pub const OVN_PREFIX: [u8; 2] = [0x0a, 0x58];

    /// The MAC OVN-Kubernetes assigns to the port holding `ip`:
    /// IPv4 → `0a:58:` + the four address bytes;
    /// IPv6 → `0a:58:` + the first four bytes of SHA-256 over the address text
    /// (upstream `util.IPAddrToHWAddr`; the last bytes of an IPv6 address are not
    /// unique enough across node subnets, hence the hash).
    pub fn from_ip(ip: IpAddr) -> MacAddr {
        let tail: [u8; 4] = match ip {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // Go's To4() treats IPv4-mapped IPv6 as IPv4; do the same.
                Some(v4) => v4.octets(),
                None => {
                    let digest = Sha256::digest(v6.to_string().as_bytes());
                    [digest[0], digest[1], digest[2], digest[3]]
                }
            },
        };
        let [p0, p1] = Self::OVN_PREFIX;
        MacAddr([p0, p1, tail[0], tail[1], tail[2], tail[3]])
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mac_is_prefix_plus_address() {
        let mac = MacAddr::from_ip("10.244.1.3".parse().unwrap());
        assert_eq!(mac.to_string(), "0a:58:0a:f4:01:03");
        let mac = MacAddr::from_ip("::ffff:10.244.1.3".parse().unwrap());
        assert_eq!(mac.to_string(), "0a:58:0a:f4:01:03");
    }

    #[test]
    fn ipv6_mac_is_prefix_plus_sha256_of_text() {
        // sha256("fd00:10:244:2::3") computed independently with coreutils sha256sum.
        // (`printf 'fd00:10:244:2::3' | sha256sum` starts with 49a193cb).
        let mac = MacAddr::from_ip("fd00:10:244:2::3".parse().unwrap());
        assert_eq!(mac.to_string(), "0a:58:49:a1:93:cb");
        // Different addresses in different node subnets with the same low bytes differ.
        let other = MacAddr::from_ip("fd00:10:244:3::3".parse().unwrap());
        assert_ne!(mac, other);
    }

    #[test]
    fn parse_and_display() {
        let mac: MacAddr = "0A:58:0a:F4:01:03".parse().unwrap();
        assert_eq!(mac.to_string(), "0a:58:0a:f4:01:03");
        let dashed: MacAddr = "0a-58-0a-f4-01-03".parse().unwrap();
        assert_eq!(mac, dashed);
        for bad in [
            "",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:03:04",
            "0a:58:0a:f4:01:zz",
            "0a:58:0a:f4:1:003",
            "0a:58-0a:f4:01:03",
        ] {
            assert_eq!(
                bad.parse::<MacAddr>(),
                Err(MacParseError(bad.to_string())),
                "{bad}"
            );
        }
    }
}
