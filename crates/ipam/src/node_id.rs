//! Cluster-wide node ids (`k8s.ovn.org/node-id`).

use crate::bitmap::Bitmap;
use crate::IpamError;

/// The first id handed out. As in OVN-Kubernetes' cluster manager, ids 0 and
/// 1 are never given to a node: the join-subnet address of a node's gateway
/// router is `join base + id`, and `.1` belongs to the cluster router
/// (`rtoj-ovn_cluster_router`, 100.64.0.1), `.0` is the network address.
pub const FIRST_NODE_ID: u32 = 2;

/// OVN-Kubernetes' limit (`maxNodeIDs`), well inside the /16 join subnet.
pub const DEFAULT_MAX_NODE_ID: u32 = 5000;

#[derive(Debug, Clone)]
pub struct NodeIdAllocator {
    bitmap: Bitmap,
    max: u32,
}

impl NodeIdAllocator {
    /// Ids `FIRST_NODE_ID..=max_id`.
    pub fn new(max_id: u32) -> Result<Self, IpamError> {
        if max_id < FIRST_NODE_ID {
            return Err(IpamError::InvalidConfig(format!(
                "max node id {max_id} is below the first id {FIRST_NODE_ID}"
            )));
        }
        let mut bitmap = Bitmap::new(u64::from(max_id) + 1);
        for reserved in 0..u64::from(FIRST_NODE_ID) {
            bitmap.set(reserved);
        }
        Ok(NodeIdAllocator {
            bitmap,
            max: max_id,
        })
    }

    fn range(&self) -> String {
        format!("node ids {FIRST_NODE_ID}..={}", self.max)
    }

    pub fn allocate(&mut self) -> Result<u32, IpamError> {
        self.bitmap
            .allocate()
            .map(|i| i as u32)
            .ok_or_else(|| IpamError::Exhausted {
                range: self.range(),
            })
    }

    fn check(&self, id: u32) -> Result<(), IpamError> {
        if id < FIRST_NODE_ID {
            return Err(IpamError::Reserved {
                value: id.to_string(),
                range: self.range(),
                why: if id == 1 {
                    "cluster router join address"
                } else {
                    "network address"
                },
            });
        }
        if id > self.max {
            return Err(IpamError::OutOfRange {
                value: id.to_string(),
                range: self.range(),
            });
        }
        Ok(())
    }

    /// Records an id read from a node annotation (restart).
    pub fn mark_allocated(&mut self, id: u32) -> Result<(), IpamError> {
        self.check(id)?;
        if !self.bitmap.set(u64::from(id)) {
            return Err(IpamError::AlreadyAllocated {
                value: id.to_string(),
                range: self.range(),
            });
        }
        Ok(())
    }

    /// Frees an id; `Ok(false)` if it was not allocated.
    pub fn release(&mut self, id: u32) -> Result<bool, IpamError> {
        self.check(id)?;
        Ok(self.bitmap.clear(u64::from(id)))
    }

    pub fn is_allocated(&self, id: u32) -> bool {
        id >= FIRST_NODE_ID && self.bitmap.is_set(u64::from(id))
    }

    pub fn allocated(&self) -> Vec<u32> {
        self.bitmap
            .iter_set()
            .filter(|&i| i >= u64::from(FIRST_NODE_ID))
            .map(|i| i as u32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_two_and_exhaust() {
        let mut a = NodeIdAllocator::new(4).unwrap();
        assert_eq!(a.allocate(), Ok(2));
        assert_eq!(a.allocate(), Ok(3));
        assert_eq!(a.allocate(), Ok(4));
        assert!(matches!(a.allocate(), Err(IpamError::Exhausted { .. })));
        assert_eq!(a.release(3), Ok(true));
        assert_eq!(a.allocate(), Ok(3));
        assert!(matches!(
            a.mark_allocated(1),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            a.mark_allocated(0),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            a.mark_allocated(5),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            a.mark_allocated(4),
            Err(IpamError::AlreadyAllocated { .. })
        ));
        assert_eq!(a.allocated(), vec![2, 3, 4]);
        assert!(NodeIdAllocator::new(1).is_err());
    }
}
