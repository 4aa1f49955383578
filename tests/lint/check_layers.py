#!/usr/bin/env python3
"""The include direction of docs/DESIGN.md section 1: a layer includes only itself and the
layers below it. Also: kernels (*/kernels/) and the schedule core include no LibTorch, the
schedule core no MPI, and no public header (outside detail/) includes <torch/torch.h>.

usage: check_layers.py SOURCE_ROOT   exit 0: clean; 1: violations, one line each, file:line
       check_layers.py --self-test   plants one violation of each rule in a scratch tree
"""
import os
import re
import sys
import tempfile

# Bottom to top. A layer may include the layers listed before it, except its `siblings`.
LAYERS = [
    "runtime",
    "runtime/data",
    "schedule",
    "parallel",
    "model",
    "schedule/executor",
    "launch/post_train",
    "launch/config",
    "launch/plan",
    "launch/train",
    "launch/export",
    "launch/cli",
]
SIBLINGS = {("launch/export", "launch/train")}  # neither includes the other
SOURCE_SUFFIXES = (".h", ".cpp", ".cu", ".cuh")
TORCH_INCLUDE = re.compile(r"#\s*include\s*<(ATen|torch|c10)/")
MPI_INCLUDE = re.compile(r"#\s*include\s*<mpi\.h>")
PROJECT_INCLUDE = re.compile(r'#\s*include\s*"([a-z_]+/[^"]+)"')


def layer_of(path):
    """The deepest layer whose folder holds `path` (relative, with '/'), or None."""
    best = None
    for layer in LAYERS:
        if path.startswith(layer + "/") and (best is None or len(layer) > len(best)):
            best = layer
    return best


def may_include(layer, target):
    if target == layer:
        return True
    if (layer, target) in SIBLINGS or (target, layer) in SIBLINGS:
        return False
    return LAYERS.index(target) < LAYERS.index(layer)


def check_file(root, path):
    layer = layer_of(path)
    is_kernel = "/kernels/" in path
    is_schedule_core = layer == "schedule"
    problems = []
    with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            where = f"{path}:{number}"
            match = PROJECT_INCLUDE.match(line.strip())
            if match:
                target = layer_of(match.group(1))
                if target is not None and not may_include(layer, target):
                    problems.append(f"{where}: {layer}/ includes \"{match.group(1)}\" from the higher layer {target}/")
            if TORCH_INCLUDE.match(line.strip()):
                if is_kernel:
                    problems.append(f"{where}: kernels are torch-free (raw pointers); adapt tensors in a .cpp")
                elif is_schedule_core:
                    problems.append(f"{where}: the schedule core links no LibTorch (executor code goes in schedule/executor/)")
                elif path.endswith(".h") and "/detail/" not in path and "<torch/torch.h>" in line:
                    problems.append(f"{where}: no <torch/torch.h> in headers (use <ATen/core/Tensor.h>)")
            if is_schedule_core and MPI_INCLUDE.match(line.strip()):
                problems.append(f"{where}: the schedule core links no MPI")
    return problems


def check_tree(root):
    """Every violation under `root`, and the number of files checked."""
    checked = 0
    problems = []
    for top in sorted({layer.split("/")[0] for layer in LAYERS}):
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs.sort()
            for name in sorted(files):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                path = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                problems += check_file(root, path)
                checked += 1
    return problems, checked


def self_test():
    """The checker finds each kind of violation and accepts the allowed includes."""
    planted = {
        "model/moe.cpp": '#include "parallel/communicator.h"\n#include "launch/train/trainer.h"\n',
        "schedule/ir.cpp": '#include <ATen/ATen.h>\n#include <mpi.h>\n#include "schedule/executor/executor.h"\n',
        "schedule/executor/executor.cpp": '#include "model/stage.h"\n#include <ATen/ATen.h>\n',
        "model/kernels/k.cu": '#include <c10/util/Half.h>\n',
        "model/stage.h": "#include <torch/torch.h>\n",
        "model/detail/layers.h": "#include <torch/torch.h>\n",
        "launch/export/hf_export.cpp": '#include "launch/train/trainer.h"\n#include "launch/config/job_config.h"\n',
        "launch/cli/main.cpp": '#include "launch/train/trainer.h"\n#include "launch/export/hf_export.h"\n',
    }
    expected = {
        "model/moe.cpp:2", "schedule/ir.cpp:1", "schedule/ir.cpp:2", "schedule/ir.cpp:3", "model/kernels/k.cu:1",
        "model/stage.h:1", "launch/export/hf_export.cpp:1",
    }
    with tempfile.TemporaryDirectory() as root:
        for path, text in planted.items():
            os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
            with open(os.path.join(root, path), "w", encoding="utf-8") as f:
                f.write(text)
        problems, _ = check_tree(root)
    found = {": ".join(p.split(": ")[:1]) for p in problems}
    if found != expected:
        print(f"self-test FAILED: expected violations at {sorted(expected)}, found {sorted(found)}")
        return 1
    print(f"self-test passed: {len(expected)} planted violations found, allowed includes accepted")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    problems, checked = check_tree(sys.argv[1])
    for problem in problems:
        print(problem)
    print(f"check_layers: {checked} files in {len(LAYERS)} layers, {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
