#!/usr/bin/env bash
# Lab benchmark: time for `ovnk lab up` to a ready 3-node lab, and time from
# `kubectl apply` of 30 pods to all of them answering (a TCP probe from another pod
# gets each pod's name back through its responder). Prints a table.
#   sudo bench/lab/run.sh [path/to/ovnk]
set -euo pipefail
cd "$(dirname "$0")/../.."
OVNK=${1:-./target/release/ovnk}
NAME=bench$$
ROOT=$(mktemp -d /tmp/ovnk-lab-bench.XXXXXX)
KCFG="$ROOT/$NAME/api/kubeconfig"
lab() { local sub=$1; shift; "$OVNK" lab "$sub" --name "$NAME" --root "$ROOT" "$@"; }
cleanup() { lab down >/dev/null 2>&1 || true; rm -rf "$ROOT"; }
trap cleanup EXIT
now() { date +%s%N; }
secs() { local d=$(( $1 / 1000000 )); printf '%d.%03d' $((d / 1000)) $((d % 1000)); }

t0=$(now)
lab up --nodes 3 >/dev/null
t_up=$(secs $(( $(now) - t0 )))

# The prober pod, then 30 pods spread by the lab scheduler.
{
  echo "apiVersion: v1
kind: Pod
metadata: {name: prober, namespace: default}
spec: {containers: [{name: c, image: alpine}]}"
  for i in $(seq 1 30); do
    echo "---
apiVersion: v1
kind: Pod
metadata: {name: p$i, namespace: default, labels: {app: bench}}
spec: {containers: [{name: c, image: alpine, ports: [{containerPort: 80}]}]}"
  done
} > "$ROOT/pods.yaml"
kubectl --kubeconfig "$KCFG" apply -f - >/dev/null <<<"$(head -4 "$ROOT/pods.yaml")"
until [ "$(kubectl --kubeconfig "$KCFG" get pod prober -o jsonpath='{.status.phase}')" = Running ]; do sleep 0.1; done

t1=$(now)
kubectl --kubeconfig "$KCFG" apply -f "$ROOT/pods.yaml" >/dev/null
declare -A answered=()
deadline=$(( $(date +%s) + 180 ))
while [ ${#answered[@]} -lt 30 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "only ${#answered[@]}/30 pods answered within 180 s" >&2; exit 1; }
  while read -r name ip; do
    [ -n "$ip" ] && [ -z "${answered[$name]:-}" ] || continue
    if [ "$(lab exec -n default prober -- "$OVNK" lab probe "$ip" 80 --timeout-ms 300 2>/dev/null)" = "$name" ]; then
      answered[$name]=1
    fi
  done < <(kubectl --kubeconfig "$KCFG" get pods -l app=bench -o jsonpath='{range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}')
done
t_pods=$(secs $(( $(now) - t1 )))

printf '\n%-48s %10s\n' "MEASURE" "SECONDS"
printf '%-48s %10s\n' "ovnk lab up (3 nodes) until ready" "$t_up"
printf '%-48s %10s\n' "kubectl apply of 30 pods until all answer" "$t_pods"
