#!/usr/bin/env python3
"""Independent checks of a `tandem export` folder.

1. Strict safetensors parse written here from the format's description (not tandem's reader):
   8-byte little-endian header length, a UTF-8 JSON object without duplicate keys, only space
   padding after it, each entry exactly {dtype, shape, data_offsets}, byte lengths equal to
   elements x dtype size, and entries that, sorted by offset, tile the data section exactly.
   A sharded export's index must name every tensor once, in the file that holds it, and its
   total_size must equal the data bytes.
2. config.json against the tensors: every shape the architecture implies (embedding, attention
   projections, MLPs, experts, router and its fp32 bias, MTP layers after the last layer).
3. When the `safetensors` package is installed: its loader returns the same tensors.
4. With --reference FILE (written by `tandem export --reference-logits FILE`) and the
   `transformers` package installed: the folder loads with AutoModelForCausalLM and its logits
   for the reference tokens match tandem's to --tolerance (max |difference| / max |tandem logit|).
   Use an fp32 export for this check (bf16 weights differ from tandem's fp32 ones by rounding).

Checks whose package is missing are skipped with a visible SKIPPED line (exit 0), unless
--require-transformers is given (then exit 77, ctest's skip code). Exit 1 on any failure.
Usage: check_hf_export.py EXPORT_DIR [--reference FILE] [--tolerance 1e-4] [--device cpu|cuda]
"""
import argparse
import json
import os
import struct
import sys

try:
    import torch
except ModuleNotFoundError:
    sys.exit("check_hf_export.py needs torch, which this python lacks: run it with the python ./bootstrap.sh "
             "used (.venv/bin/python when it installed torch there)")

DTYPES = {  # safetensors name -> (torch dtype, bytes per element)
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}


class CheckFailed(Exception):
    pass


def require(condition, message):
    if not condition:
        raise CheckFailed(message)


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    require(not duplicates, f"duplicate JSON keys {duplicates}")
    return dict(pairs)


def read_safetensors(path):
    """Parses `path` strictly; returns ({name: tensor}, metadata)."""
    with open(path, "rb") as f:
        blob = f.read()
    require(len(blob) >= 8, f"{path}: {len(blob)} bytes, shorter than the length field")
    (n,) = struct.unpack("<Q", blob[:8])
    require(8 + n <= len(blob), f"{path}: header length {n} exceeds the file")
    raw = blob[8:8 + n]
    text = raw.decode("utf-8")
    stripped = text.rstrip(" ")
    require(stripped.startswith("{") and stripped.endswith("}"), f"{path}: header is not a JSON object + spaces")
    header = json.loads(stripped, object_pairs_hook=no_duplicate_keys)
    metadata = header.pop("__metadata__", {})
    require(all(isinstance(v, str) for v in metadata.values()), f"{path}: __metadata__ values must be strings")
    data = blob[8 + n:]
    spans = []
    tensors = {}
    for name, entry in header.items():
        require(isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"},
                f"{path}: {name}: fields {sorted(entry) if isinstance(entry, dict) else entry}")
        require(entry["dtype"] in DTYPES, f"{path}: {name}: unknown dtype {entry['dtype']}")
        shape = entry["shape"]
        require(isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape),
                f"{path}: {name}: bad shape {shape}")
        begin, end = entry["data_offsets"]
        dtype, size = DTYPES[entry["dtype"]]
        numel = 1
        for d in shape:
            numel *= d
        require(0 <= begin <= end <= len(data), f"{path}: {name}: offsets {begin, end} outside {len(data)} bytes")
        require(end - begin == numel * size, f"{path}: {name}: {end - begin} bytes for {shape} {entry['dtype']}")
        spans.append((begin, end, name))
        buffer = bytearray(data[begin:end])
        tensors[name] = (torch.frombuffer(buffer, dtype=dtype) if numel else torch.empty(0, dtype=dtype)).reshape(shape)
    covered = 0
    for begin, end, name in sorted(spans):
        require(begin == covered, f"{path}: {name} starts at {begin}, previous data ends at {covered}")
        covered = end
    require(covered == len(data), f"{path}: tensors cover {covered} of {len(data)} data bytes")
    return tensors, metadata


def load_export(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    require(files, f"{folder}: no .safetensors files")
    tensors, where = {}, {}
    for file in files:
        part, _ = read_safetensors(os.path.join(folder, file))
        for name, value in part.items():
            require(name not in tensors, f"{name} is in both {where.get(name)} and {file}")
            tensors[name], where[name] = value, file
    index_path = os.path.join(folder, "model.safetensors.index.json")
    if len(files) > 1 or os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f, object_pairs_hook=no_duplicate_keys)
        require(index["weight_map"] == where, "the index's weight_map differs from the files' contents")
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        require(index["metadata"]["total_size"] == total, f"index total_size {index['metadata']['total_size']} != {total}")
        require(all(f"-of-{len(files):05d}.safetensors" in f for f in files), f"shard names {files}")
    else:
        require(files == ["model.safetensors"], f"an unsharded export is model.safetensors, got {files}")
    return tensors, files


def check_shapes(config, tensors):
    """Every tensor the architecture needs, with the shape config.json implies."""
    h, v = config["hidden_size"], config["vocab_size"]
    layers = config["num_hidden_layers"]
    expect = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h]}
    if not config.get("tie_word_embeddings"):
        expect["lm_head.weight"] = [v, h]
    llama = config["model_type"] == "llama"
    mtp = config.get("num_nextn_predict_layers", 0)
    for i in range(layers + mtp):
        p = f"model.layers.{i}."
        expect[p + "input_layernorm.weight"] = [h]
        expect[p + "post_attention_layernorm.weight"] = [h]
        if llama:
            hd, heads, kv = config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]
            expect.update({p + "self_attn.q_proj.weight": [heads * hd, h], p + "self_attn.k_proj.weight": [kv * hd, h],
                           p + "self_attn.v_proj.weight": [kv * hd, h], p + "self_attn.o_proj.weight": [h, heads * hd]})
        else:
            heads, nope, rope, vd = (config["num_attention_heads"], config["qk_nope_head_dim"],
                                     config["qk_rope_head_dim"], config["v_head_dim"])
            kvr, qr = config["kv_lora_rank"], config["q_lora_rank"]
            if qr is None:
                expect[p + "self_attn.q_proj.weight"] = [heads * (nope + rope), h]
            else:
                expect.update({p + "self_attn.q_a_proj.weight": [qr, h], p + "self_attn.q_a_layernorm.weight": [qr],
                               p + "self_attn.q_b_proj.weight": [heads * (nope + rope), qr]})
            expect.update({p + "self_attn.kv_a_proj_with_mqa.weight": [kvr + rope, h],
                           p + "self_attn.kv_a_layernorm.weight": [kvr],
                           p + "self_attn.kv_b_proj.weight": [heads * (nope + vd), kvr],
                           p + "self_attn.o_proj.weight": [h, heads * vd]})
        moe = not llama and config["n_routed_experts"] > 0 and i >= config["first_k_dense_replace"]
        if moe:
            e, w = config["n_routed_experts"], config["moe_intermediate_size"]
            expect[p + "mlp.gate.weight"] = [e, h]
            expect[p + "mlp.gate.e_score_correction_bias"] = [e]
            for j in range(e):
                q = f"{p}mlp.experts.{j}."
                expect.update({q + "gate_proj.weight": [w, h], q + "up_proj.weight": [w, h], q + "down_proj.weight": [h, w]})
            if config["n_shared_experts"] > 0:
                s = w * config["n_shared_experts"]
                q = p + "mlp.shared_experts."
                expect.update({q + "gate_proj.weight": [s, h], q + "up_proj.weight": [s, h], q + "down_proj.weight": [h, s]})
        else:
            w = config["intermediate_size"]
            expect.update({p + "mlp.gate_proj.weight": [w, h], p + "mlp.up_proj.weight": [w, h],
                           p + "mlp.down_proj.weight": [h, w]})
        if i >= layers:  # MTP module k = i - layers + 1, stored as an extra layer
            expect.update({p + "enorm.weight": [h], p + "hnorm.weight": [h], p + "eh_proj.weight": [h, 2 * h],
                           p + "shared_head.norm.weight": [h], p + "embed_tokens.weight": [v, h],
                           p + "shared_head.head.weight": [v, h]})
    missing = sorted(set(expect) - set(tensors))
    extra = sorted(set(tensors) - set(expect))
    require(not missing, f"missing tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    require(not extra, f"tensors config.json does not explain: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    for name, shape in expect.items():
        require(list(tensors[name].shape) == shape, f"{name}: shape {list(tensors[name].shape)}, config implies {shape}")
    for name, value in tensors.items():
        if name.endswith("e_score_correction_bias"):
            require(value.dtype == torch.float32, f"{name} should stay fp32, is {value.dtype}")
    return len(expect)


def compare_with_transformers(folder, reference, tolerance, device):
    import transformers  # noqa: F401  (ImportError handled by the caller)
    from transformers import AutoModelForCausalLM

    ref, _ = read_safetensors(reference)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_arg = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", **{dtype_arg: torch.float32})
    model.to(device).eval()
    with torch.no_grad():
        logits = model(ref["input_ids"].to(device)).logits.float().cpu()
    expected = ref["logits"]
    require(logits.shape == expected.shape, f"logits shape {list(logits.shape)} vs tandem's {list(expected.shape)}")
    diff = (logits - expected).abs().max().item()
    scale = expected.abs().max().item()
    relative = diff / scale
    print(f"transformers {transformers.__version__} {type(model).__name__} on {device}: max |logit difference| "
          f"{diff:.3e}, max |tandem logit| {scale:.3e}, relative {relative:.3e} (tolerance {tolerance:g})")
    require(relative <= tolerance, f"logits differ from tandem's by {relative:.3e} relative (> {tolerance:g})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--reference", help="tandem's reference logits (tandem export --reference-logits FILE)")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--require-transformers", action="store_true")
    args = parser.parse_args()
    try:
        with open(os.path.join(args.folder, "config.json")) as f:
            config = json.load(f, object_pairs_hook=no_duplicate_keys)
        tensors, files = load_export(args.folder)
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        print(f"ok: strict safetensors parse: {len(tensors)} tensors, {total} bytes in {len(files)} file(s)")
        n = check_shapes(config, tensors)
        print(f"ok: config.json ({config['architectures'][0]}) explains all {n} tensors and their shapes")
        try:
            from safetensors.torch import load_file
        except ImportError:
            print("SKIPPED: cross-check with the safetensors package (not installed in this python)")
        else:
            for file in files:
                for name, value in load_file(os.path.join(args.folder, file)).items():
                    require(torch.equal(value, tensors[name]), f"safetensors package reads {name} differently")
            print("ok: the safetensors package loads the same tensors")
        if args.reference:
            try:
                compare_with_transformers(args.folder, args.reference, args.tolerance, args.device)
                print("ok: transformers logits match tandem's")
            except ImportError as error:
                print(f"SKIPPED: logits parity with transformers ({error})")
                if args.require_transformers:
                    return 77
    except CheckFailed as error:
        print(f"FAIL: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
