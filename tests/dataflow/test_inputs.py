"""Hardware presets, workloads, calibration and the torch-free import of the cost model."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from attnreuse.dataflow import HARDWARE, MODELS, Hardware, attention_layer, get_hardware, get_workload
from attnreuse.dataflow.hardware import calibrate_cpu, cpu_cache_bytes

SRC = Path(__file__).resolve().parents[2] / "src" / "attnreuse"


def test_dataflow_modules_import_without_torch():
    """Load every dataflow module under a stub `attnreuse` package with torch made unimportable."""
    code = f"""
import importlib, pkgutil, sys, types
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
pkg = types.ModuleType("attnreuse")
pkg.__path__ = [{str(SRC)!r}]
sys.modules["attnreuse"] = pkg
import attnreuse.dataflow
for info in pkgutil.iter_modules(attnreuse.dataflow.__path__):
    importlib.import_module("attnreuse.dataflow." + info.name)
assert "torch" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_presets_cite_their_numbers():
    edge, cloud = HARDWARE["flat-edge"], HARDWARE["flat-cloud"]
    assert (edge.macs_per_cycle, edge.buffer_bytes, edge.offchip_bytes_per_s) == (1024, 512 * 1024, 50e9)
    assert (cloud.macs_per_cycle, cloud.buffer_bytes, cloud.offchip_bytes_per_s) == (65536, 32 << 20, 400e9)
    assert HARDWARE["jetson-orin"].offchip_bytes_per_s == 204.8e9
    for hw in HARDWARE.values():
        assert any("Horowitz" in s for s in hw.sources), hw.name
        assert len(hw.sources) >= 2


def test_unknown_hardware_and_bad_fields_are_named():
    with pytest.raises(ValueError, match="unknown hardware 'tpu'.*flat-edge"):
        get_hardware("tpu")
    with pytest.raises(ValueError, match="buffer_bytes must be a positive int, got 0"):
        dataclasses.replace(HARDWARE["flat-edge"], buffer_bytes=0)
    with pytest.raises(ValueError, match="clock_hz must be a positive number, got -1"):
        dataclasses.replace(HARDWARE["flat-edge"], clock_hz=-1)


def test_cache_size_is_read_from_sysfs(tmp_path):
    for index, (kind, size) in enumerate([("Data", "48K"), ("Instruction", "64M"), ("Unified", "32768K")]):
        d = tmp_path / f"index{index}"
        d.mkdir()
        (d / "type").write_text(kind + "\n")
        (d / "size").write_text(size + "\n")
    assert cpu_cache_bytes(tmp_path) == 32 << 20
    with pytest.raises(FileNotFoundError, match="no data cache sizes"):
        cpu_cache_bytes(tmp_path / "missing")


def test_calibrated_cpu_is_a_valid_hardware():
    hw = calibrate_cpu(seconds=0.01)
    assert isinstance(hw, Hardware) and hw.name == "this-cpu" and hw.elem_bytes == 4
    assert not hw.overlap_memory and hw.fresh_alloc_min_bytes == 16 << 20


def test_flat_models_and_bad_workloads():
    assert {"bert-base", "trxl", "t5", "xlm"} <= set(MODELS)
    w = get_workload("xlm", batch=8)
    assert (w.batch, w.embed_dim, w.v_heads, w.dk, w.mlp_hidden) == (8, 2048, 16, 128, 8192)
    with pytest.raises(ValueError, match="seq_len must be a positive int, got 0"):
        w.with_seq(0)
    with pytest.raises(ValueError, match="seq_len must be a positive int, got -5"):
        attention_layer(batch=1, heads=2, seq_len=-5, dk=4)
    with pytest.raises(ValueError, match="map_sharing must divide heads=6, got 4"):
        attention_layer(batch=1, heads=6, seq_len=8, dk=4, map_sharing=4)
    with pytest.raises(ValueError, match="unknown model 'bert-huge'"):
        get_workload("bert-huge")
    assert w.reuse().q_heads == 1 and w.reuse().map_sharing == 16


def test_workload_from_a_timm_model():
    w = get_workload("vit_tiny_patch16_224", batch=2)
    assert (w.seq_len, w.depth, w.v_heads, w.dk, w.embed_dim, w.mlp_hidden) == (197, 12, 3, 64, 192, 768)
