"""`import attnreuse` is lean: no optional dependency, no extra threads, no output."""

import json
import subprocess
import sys

OPTIONAL = ("onnx", "onnxruntime", "onnxscript", "matplotlib", "sklearn", "tqdm")

PROBE = """
import json, os, sys, threading
def os_threads():
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
import torch, timm
before = (threading.active_count(), os_threads())
preloaded = set(sys.modules)
import attnreuse
after = (threading.active_count(), os_threads())
info = {"before": before, "after": after, "modules": sorted(sys.modules), "added": sorted(set(sys.modules) - preloaded)}
sys.__stdout__.write("\\n@@" + json.dumps(info))
"""


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_prints_nothing_loads_no_optional_dependency_starts_no_threads():
    result = _run(PROBE)
    assert result.returncode == 0, result.stderr
    printed, _, payload = result.stdout.rpartition("\n@@")
    assert printed == "" and result.stderr == ""
    info = json.loads(payload)
    added = {m.split(".")[0] for m in info["added"]}
    assert not added & set(OPTIONAL), sorted(added & set(OPTIONAL))
    # torch itself imports tqdm; nothing in the stack should pull in the heavy optional ones
    loaded = {m.split(".")[0] for m in info["modules"]}
    assert not loaded & (set(OPTIONAL) - {"tqdm"}), sorted(loaded & set(OPTIONAL))
    assert info["after"] == info["before"], info


def test_public_names():
    import attnreuse

    assert attnreuse.__version__
    for name in ("softmax_attention", "apply_map", "attention_map", "taylor_attention", "linear_attention",
                 "sparse_attention", "use_backend", "reference"):
        assert hasattr(attnreuse.ops, name) and name in attnreuse.ops.__all__, name
