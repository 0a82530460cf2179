#!/usr/bin/env bash
# The main job: install what is missing, build ovnk, and run the lab demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building ovnk (release)"
cargo build --release --quiet -p ovnk
./target/release/ovnk --version
