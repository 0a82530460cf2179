//! An in-memory [`NetOps`] for unit tests: it keeps the links it was asked to make
//! and answers CHECK from them, so tests assert outcomes, not call sequences.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::podnet::{HostLinkSpec, NetOps, PodInterface, PodInterfaceSpec};
use crate::NetError;

/// Links as the fake kernel holds them.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Pod ends keyed by host ifname, with the spec they were made from.
    pub pods: BTreeMap<String, PodInterfaceSpec>,
    /// Host links (e.g. the management port) and their configuration.
    pub host_links: BTreeMap<String, Option<HostLinkSpec>>,
    /// Netns paths that "exist".
    pub netns: Vec<String>,
}

#[derive(Debug, Default)]
pub struct FakeNet {
    pub state: Mutex<FakeState>,
}

impl FakeNet {
    pub fn with_netns(paths: &[&str]) -> Self {
        let f = Self::default();
        f.lock().netns = paths.iter().map(|s| s.to_string()).collect();
        f
    }

    /// Makes a host link exist (as ovs-vswitchd would for an internal port).
    pub fn add_host_link(&self, name: &str) {
        self.lock().host_links.insert(name.to_string(), None);
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        // A test that panicked while holding the lock already failed; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn host_mac_for(name: &str) -> [u8; 6] {
    let mut m = [0x02, 0, 0, 0, 0, 0];
    for (i, b) in name.bytes().enumerate() {
        m[1 + i % 5] ^= b;
    }
    m
}

impl NetOps for FakeNet {
    async fn setup_pod(&self, spec: &PodInterfaceSpec) -> Result<PodInterface, NetError> {
        let mut st = self.lock();
        if !st.netns.contains(&spec.netns) {
            return Err(NetError::LinkNotFound(format!(
                "{}: no such network namespace",
                spec.netns
            )));
        }
        st.pods.insert(spec.host_ifname.clone(), spec.clone());
        Ok(PodInterface {
            host_ifname: spec.host_ifname.clone(),
            host_mac: host_mac_for(&spec.host_ifname),
            pod_ifname: spec.ifname.clone(),
            pod_mac: spec.mac,
        })
    }

    async fn teardown_pod(&self, host_ifname: &str) -> Result<(), NetError> {
        self.lock().pods.remove(host_ifname);
        Ok(())
    }

    async fn check_pod(&self, spec: &PodInterfaceSpec) -> Result<(), NetError> {
        let st = self.lock();
        match st.pods.get(&spec.host_ifname) {
            None => Err(NetError::LinkNotFound(spec.host_ifname.clone())),
            Some(have) if have != spec => Err(NetError::Mismatch(format!(
                "{}: configured as {have:?}",
                spec.host_ifname
            ))),
            Some(_) => Ok(()),
        }
    }

    async fn configure_host_link(&self, spec: &HostLinkSpec) -> Result<(), NetError> {
        let mut st = self.lock();
        match st.host_links.get_mut(&spec.name) {
            None => Err(NetError::LinkNotFound(spec.name.clone())),
            Some(slot) => {
                *slot = Some(spec.clone());
                Ok(())
            }
        }
    }

    async fn link_exists(&self, name: &str) -> Result<bool, NetError> {
        let st = self.lock();
        Ok(st.pods.contains_key(name) || st.host_links.contains_key(name))
    }
}
