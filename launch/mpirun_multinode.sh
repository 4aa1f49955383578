#!/usr/bin/env bash
# Multi-node `tandem train` with Open MPI's mpirun and a hostfile, without a scheduler: one rank
# per GPU on every host.
#   launch/mpirun_multinode.sh HOSTFILE JOB.yaml [--set key=value ...]
# HOSTFILE: one line per node, "HOST slots=GPUS" (see launch/hostfile.example); the same
# repository path and build must exist on every node (a shared file system, or the same
# checkout everywhere), and passwordless ssh between nodes must work.
# Environment: GPUS_PER_NODE (default: the slots of the first host), TANDEM_BIN (default
# build/bin/tandem), MPIRUN_EXTRA (more mpirun arguments, e.g. "--mca btl_tcp_if_include eth0"),
# TANDEM_DRY_RUN=1 (print the commands only). NCCL/MPI defaults: launch/env.sh.
set -euo pipefail

hostfile=${1:?usage: launch/mpirun_multinode.sh HOSTFILE JOB.yaml [--set key=value ...]}
job=${2:?usage: launch/mpirun_multinode.sh HOSTFILE JOB.yaml [--set key=value ...]}
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tandem=${TANDEM_BIN:-$root/build/bin/tandem}
# shellcheck source=launch/env.sh
source "$root/launch/env.sh"

[ -f "$hostfile" ] || { echo "tandem: hostfile $hostfile not found" >&2; exit 2; }
hosts=$(grep -Ev '^[[:space:]]*(#|$)' "$hostfile" | awk '{print $1}')
nodes=$(echo "$hosts" | grep -c .)
first_slots=$(grep -Ev '^[[:space:]]*(#|$)' "$hostfile" | head -1 | sed -nE 's/.*slots=([0-9]+).*/\1/p')
gpus_per_node=${GPUS_PER_NODE:-${first_slots:-}}
[ -n "$gpus_per_node" ] || { echo "tandem: give slots=N in $hostfile or set GPUS_PER_NODE" >&2; exit 2; }
world=$((nodes * gpus_per_node))
cores=$(nproc)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cores / gpus_per_node > 0 ? cores / gpus_per_node : 1 ))}

echo "tandem: $nodes node(s) x $gpus_per_node GPU(s) = $world ranks on: $(echo "$hosts" | paste -sd ' ')"
tandem_print_env

run() {
  if [ "${TANDEM_DRY_RUN:-0}" = 1 ]; then echo "+ $*"; else "$@"; fi
}

run "$tandem" check-config "$job" --world "$world" --quiet "$@"

forward=()
for name in $(tandem_env_names); do forward+=(-x "$name"); done
read -r -a extra <<<"${MPIRUN_EXTRA:-}"
run mpirun -np "$world" --hostfile "$hostfile" --map-by "ppr:${gpus_per_node}:node" --bind-to none \
  "${forward[@]}" "${extra[@]}" "$tandem" train "$job" "$@"
