#!/usr/bin/env bash
# `tandem checkpoint inspect` and `tandem export` end to end: a small job trained for 4 steps on
# 2 ranks (on a corpus made here by `tandem preprocess`, so no external data is needed) leaves a
# checkpoint that inspects clean (text and JSON), exports to a Hugging Face folder that passes the
# independent Python check (scripts/check_hf_export.py: strict safetensors parse, config.json vs
# shapes, and the safetensors/transformers packages where installed), shards with an index under
# a small --max-shard-size, and, once a byte of a shard is flipped, makes inspect and export exit
# 2 naming the damaged file.
# Usage: export_cli_test.sh TANDEM_BINARY SOURCE_DIR PYTHON MPIEXEC...
set -uo pipefail
tandem=$1 source_dir=$2 python=$3; shift 3
mpiexec=("$@")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
failures=0 passed=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# A corpus of 400 short documents separated by '%' lines.
for i in $(seq 1 400); do printf 'document %d: the quick brown fox %d jumps over the lazy dog.\n%%\n' "$i" $((i * 7)); done \
  >"$work/corpus.txt"
"$tandem" preprocess --input "$work/corpus.txt" --output "$work/corpus" --split-on % >"$work/preprocess.log" 2>&1 ||
  fail "preprocess exited $? ($(tail -2 "$work/preprocess.log"))"

small=(--set data.path="$work/corpus" --set model.hidden_size=32 --set model.intermediate_size=64
       --set model.moe_intermediate_size=16 --set model.num_hidden_layers=2 --set model.kv_lora_rank=16
       --set model.qk_nope_head_dim=8 --set model.qk_rope_head_dim=8 --set model.v_head_dim=8
       --set data.seq_length=32 --set data.global_batch_size=4 --set data.micro_batch_size=2
       --set train.eval_interval=0 --set logging.tensorboard=false --set checkpoint.interval=2
       --set train.steps=4 --set run.output_dir="$work/run"
       --set parallel.pp=1 --set parallel.pipeline.schedule=1f1b)  # the default job's DualPipe pp4 -> one stage
timeout 120 "${mpiexec[@]}" -np 2 "$tandem" train "$source_dir/configs/tiny_moe.yaml" "${small[@]}" >"$work/train.log" 2>&1 ||
  fail "train exited $? ($(tail -3 "$work/train.log"))"
ckpt=$work/run/checkpoints

# 1. inspect: the root resolves through latest; every file verified; JSON parses.
if "$tandem" checkpoint inspect "$ckpt" >"$work/inspect.txt" 2>&1 &&
   grep -q "latest -> step_00000004" "$work/inspect.txt" && grep -q "step 4, optimizer step 4" "$work/inspect.txt" &&
   grep -q "2 ranks = pp 1 x dp 2 x tp 1" "$work/inspect.txt" &&
   grep -q "verification: all 2 files intact (sizes and CRC-32C)" "$work/inspect.txt"; then
  ok "checkpoint inspect: $(grep -c "model.layers" "$work/inspect.txt") layer tensor rows, all files intact"
else
  fail "checkpoint inspect"; head -20 "$work/inspect.txt"
fi
if "$tandem" checkpoint inspect --json "$ckpt/step_00000004" >"$work/inspect.json" 2>"$work/inspect.err" &&
   "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] and d["step"]==4 and len(d["files"])==2, d' \
     "$work/inspect.json"; then
  ok "checkpoint inspect --json parses (step 4, ok)"
else
  fail "checkpoint inspect --json"; head -5 "$work/inspect.json" "$work/inspect.err"
fi

# 2. export fp32 with reference logits; the independent check passes.
if "$tandem" export "$ckpt" "$work/hf" --dtype fp32 --reference-logits "$work/reference.safetensors" >"$work/export.log" 2>&1 &&
   "$python" "$source_dir/scripts/check_hf_export.py" "$work/hf" --reference "$work/reference.safetensors" >"$work/check.log" 2>&1; then
  ok "export fp32 -> $(head -1 "$work/export.log" | sed 's/.* as //')"
  sed 's/^/    /' "$work/check.log"
else
  fail "export fp32 / check"; cat "$work/export.log" "$work/check.log" | head -20
fi

# 3. bf16, sharded under a 100 kB limit, with an index.
if "$tandem" export "$ckpt/step_00000004" "$work/hf_sharded" --max-shard-size 100KB >"$work/export2.log" 2>&1 &&
   [ -f "$work/hf_sharded/model.safetensors.index.json" ] && [ -f "$work/hf_sharded/model-00001-of-00002.safetensors" ] &&
   "$python" "$source_dir/scripts/check_hf_export.py" "$work/hf_sharded" >"$work/check2.log" 2>&1; then
  ok "export bf16 sharded: $(find "$work/hf_sharded" -name 'model-*.safetensors' | wc -l) shards + index pass the check"
else
  fail "sharded export"; cat "$work/export2.log" "$work/check2.log" | head -20; ls "$work/hf_sharded"
fi

# 4. a flipped byte: inspect and export exit 2 naming the file.
printf '\x55' | dd of="$ckpt/step_00000004/rank_00000.bin" bs=1 seek=64 conv=notrunc status=none
"$tandem" checkpoint inspect "$ckpt" >"$work/bad.txt" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q "rank_00000.bin: CRC-32C .* does not match" "$work/bad.txt" && grep -q "damaged tensors:" "$work/bad.txt"; then
  ok "corrupt shard: inspect exits 2 naming rank_00000.bin and the damaged tensor"
else
  fail "corrupt shard: inspect exit $rc"; tail -5 "$work/bad.txt"
fi
"$tandem" export "$ckpt" "$work/hf_bad" >"$work/bad_export.txt" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q "rank_00000.bin" "$work/bad_export.txt"; then
  ok "corrupt shard: export exits 2 naming rank_00000.bin"
else
  fail "corrupt shard: export exit $rc"; tail -5 "$work/bad_export.txt"
fi
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
