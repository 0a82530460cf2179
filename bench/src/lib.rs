//! Shared helpers for the benchmark commands in `src/bin/`.
