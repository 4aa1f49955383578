#!/usr/bin/env bash
# bash -n (syntax) on every shell script of launch/ and scripts/, and shellcheck when it is
# installed (skipped with a visible note otherwise); then the launchers' dry runs must produce the
# expected commands (world size from the hostfile or the Slurm variables, one rank per GPU,
# NCCL_NVLS_ENABLE=0 forwarded). Usage: check_shell_scripts.sh SOURCE_DIR
set -uo pipefail
source_dir=$1
mapfile -t scripts < <(find "$source_dir/launch" "$source_dir/scripts" -name '*.sh' -o -name '*.sbatch' | sort)
if [ ${#scripts[@]} -lt 3 ]; then
  echo "FAIL: expected the launch scripts (found ${#scripts[@]}: ${scripts[*]})"
  exit 1
fi
failures=0
for script in "${scripts[@]}"; do
  if bash -n "$script"; then echo "ok: bash -n ${script#"$source_dir"/}"; else echo "FAIL: bash -n $script"; failures=$((failures + 1)); fi
done
if command -v shellcheck >/dev/null 2>&1; then
  for script in "${scripts[@]}"; do
    if shellcheck -S warning -s bash "$script"; then echo "ok: shellcheck ${script#"$source_dir"/}"
    else echo "FAIL: shellcheck $script"; failures=$((failures + 1)); fi
  done
else
  echo "note: shellcheck is not installed; only bash -n was run"
fi

# expect NAME OUTPUT FRAGMENT...: every fragment occurs in OUTPUT.
expect() {
  local name=$1 output=$2 fragment; shift 2
  for fragment in "$@"; do
    if [[ "$output" != *"$fragment"* ]]; then
      echo "FAIL: $name: missing '$fragment' in:"; echo "$output"; failures=$((failures + 1)); return
    fi
  done
  echo "ok: $name"
}
out=$(TANDEM_DRY_RUN=1 NCCL_NVLS_ENABLE='' CUDA_VISIBLE_DEVICES=0,1 "$source_dir/launch/mpirun_multinode.sh" \
  "$source_dir/launch/hostfile.example" configs/tiny_moe.yaml --set train.steps=5 2>&1)
expect "mpirun_multinode.sh dry run" "$out" "2 node(s) x 8 GPU(s) = 16 ranks on: node01 node02" \
  "check-config configs/tiny_moe.yaml --world 16 --quiet --set train.steps=5" "mpirun -np 16 --hostfile" \
  "--map-by ppr:8:node" "-x NCCL_NVLS_ENABLE" "NCCL_NVLS_ENABLE=0" "train configs/tiny_moe.yaml --set train.steps=5"
[[ "$out" == *"-x CUDA_VISIBLE_DEVICES"* ]] && { echo "FAIL: CUDA_VISIBLE_DEVICES forwarded across nodes"; failures=$((failures + 1)); }
slurm=(env TANDEM_DRY_RUN=1 SLURM_JOB_NUM_NODES=4 "SLURM_NTASKS_PER_NODE=8(x4)" SLURM_GPUS_PER_NODE=h100:8
       SLURM_CPUS_PER_TASK=12 SLURM_SUBMIT_DIR="$source_dir" bash "$source_dir/launch/slurm_train.sbatch")
out=$("${slurm[@]}" configs/moe_16e_gpu.yaml 2>&1)
expect "slurm_train.sbatch dry run (srun)" "$out" "4 node(s) x 8 rank(s) = 32 ranks, 8 GPU(s) per node" \
  "check-config configs/moe_16e_gpu.yaml --world 32 --quiet" "srun --mpi=pmix --kill-on-bad-exit=1 --ntasks-per-node=8" \
  "--cpus-per-task=12" "NCCL_NVLS_ENABLE=0"
out=$(TANDEM_LAUNCHER=mpirun "${slurm[@]}" configs/moe_16e_gpu.yaml 2>&1)
expect "slurm_train.sbatch dry run (mpirun)" "$out" "mpirun -np 32 --map-by ppr:8:node:PE=12" "-x NCCL_NVLS_ENABLE"
out=$(env TANDEM_DRY_RUN=1 SLURM_JOB_NUM_NODES=1 SLURM_NTASKS_PER_NODE=8 SLURM_GPUS_PER_NODE=4 \
  SLURM_SUBMIT_DIR="$source_dir" bash "$source_dir/launch/slurm_train.sbatch" configs/tiny_moe.yaml 2>&1)
expect "slurm_train.sbatch warns on ranks != GPUs" "$out" "WARNING: 8 ranks per node but 4 GPUs per node"

echo "${#scripts[@]} scripts, $failures failure(s)"
[ "$failures" -eq 0 ]
