//! The lab: OVN/OVS daemons, node and pod namespaces, lab kubelet, scheduler
