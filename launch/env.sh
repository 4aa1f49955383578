#!/usr/bin/env bash
# Environment for multi-GPU tandem jobs: sourced by launch/slurm_train.sbatch and
# launch/mpirun_multinode.sh (source it yourself before a hand-written srun or mpirun).
# Only variables that are unset get a value, so a site's or a user's setting always wins.
#
# NCCL_NVLS_ENABLE=0 (documented default): NVLink SHARP ("NVLS", NVLink multicast) stays off.
#   tandem's collectives (all-to-all for experts, point-to-point for pipelines, ring/tree
#   all-reduce and reduce-scatter for data parallelism) do not need it, it reserves extra GPU
#   memory per communicator, and on shared multi-GPU hosts a program using multicast has been
#   seen to leave the host's GPUs unusable for others. PyTorch's and NVSHMEM's multicast
#   switches are set to match. On a dedicated NVSwitch system you may set NCCL_NVLS_ENABLE=1
#   yourself for faster large all-reduces.
# NCCL_DEBUG=WARN: NCCL explains its own failures (bad topology, IB errors) without chatter.
# OMP_NUM_THREADS: CPU threads per rank (rank-local host work); the scripts set it from the CPUs
#   each rank owns. Too many threads per rank oversubscribes the node (tandem train warns).
# Site-specific variables (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, UCX_NET_DEVICES, ...) are passed on
# unchanged when set: see tandem_env_names.

: "${NCCL_NVLS_ENABLE:=0}"
: "${TORCH_SYMM_MEM_DISABLE_MULTICAST:=1}"
: "${NVSHMEM_DISABLE_NVLS:=1}"
: "${NCCL_DEBUG:=WARN}"
export NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST NVSHMEM_DISABLE_NVLS NCCL_DEBUG

# Names of the variables a launcher must forward to every rank (mpirun -x NAME): the ones above
# and every NCCL_*, UCX_*, OMPI_MCA_*, CUDA_* and OMP_* variable set in this shell, except
# CUDA_VISIBLE_DEVICES, which the scheduler sets per node and must not be copied across nodes.
tandem_env_names() {
  {
    printf '%s\n' NCCL_NVLS_ENABLE TORCH_SYMM_MEM_DISABLE_MULTICAST NVSHMEM_DISABLE_NVLS NCCL_DEBUG
    compgen -e | grep -E '^(NCCL|UCX|OMPI_MCA|CUDA|OMP)_' | grep -vx CUDA_VISIBLE_DEVICES || true
  } | sort -u
}

# Prints the job's communication environment (the first lines of a job log).
tandem_print_env() {
  local name
  echo "tandem launch environment:"
  for name in $(tandem_env_names); do
    echo "  $name=${!name-}"
  done
}
