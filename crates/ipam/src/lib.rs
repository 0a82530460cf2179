//! Pure IP allocators: cluster CIDR to node subnets, node subnet to pod addresses
