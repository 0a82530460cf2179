//! A small Kubernetes-compatible API server on SQLite, for the lab
