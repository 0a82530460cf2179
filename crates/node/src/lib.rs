//! Node agent: local OVS registration, CNI server, pod wiring
