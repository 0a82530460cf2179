//! Cluster-side controller: Kubernetes objects to OVN Northbound rows
