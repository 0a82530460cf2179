//! Test fixtures: real ovsdb-server / OVN processes in temp dirs, and the CI=true skip rule.
