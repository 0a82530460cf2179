//! CNI plugin shim: forwards CNI requests to the node agent
