//! OVN-Kubernetes annotation formats (k8s.ovn.org/*): parse, validate, render.
