"""Int8 quantisation through ONNX Runtime: runs, smaller file, agreement reported, atomic output."""

import pytest
import torch

from attnreuse.data import digits_images
from attnreuse.deploy import create_export_model, export_onnx, ort_session, run_ort
from attnreuse.export.pipeline import ExportConfig, int8_path, run_export
from attnreuse.quantize import compare_int8, quantize_onnx

PICO = "vit_attnreuse_pico_patch4_32"


@pytest.fixture(scope="module")
def fp32_file(tmp_path_factory):
    torch.manual_seed(0)
    model = create_export_model(PICO, num_classes=10, model_kwargs={"attn_plan": ["mha", "share", "skip"] * 2})
    path = tmp_path_factory.mktemp("q") / "fp32.onnx"
    export_onnx(model, path, digits_images("test", img_size=32, limit=2)[0], exporter="torchscript", threads=1)
    return path


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_runs_is_smaller_and_agrees(tmp_path, fp32_file, mode):
    calib = digits_images("train", img_size=32, limit=16)[0] if mode == "static" else None
    out = quantize_onnx(fp32_file, tmp_path / "int8.onnx", mode=mode, calib_images=calib)
    assert out.stat().st_size < 0.5 * fp32_file.stat().st_size
    x, y = digits_images("test", img_size=32, limit=32)
    logits = run_ort(ort_session(out, threads=1), x, batch=1)
    assert logits.shape == (32, 10) and torch.isfinite(logits).all()
    rec = compare_int8(fp32_file, out, x, y, threads=1, warmup=1, repeats=2, min_time_s=0.0)
    assert rec["images"] == 32 and 0.0 <= rec["top1_agreement"] <= 1.0
    assert rec["size_ratio"] == pytest.approx(out.stat().st_size / fp32_file.stat().st_size)
    # a random-init model has near-tied logits, so only ask that int8 mostly agrees
    assert rec["top1_agreement"] >= 0.5, rec


def test_static_without_calibration_images_is_an_error_and_writes_nothing(tmp_path, fp32_file):
    with pytest.raises(ValueError, match="static quantization needs calib_images"):
        quantize_onnx(fp32_file, tmp_path / "int8.onnx", mode="static")
    with pytest.raises(ValueError, match="mode must be one of"):
        quantize_onnx(fp32_file, tmp_path / "int8.onnx", mode="int4")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "int8.onnx")
    assert list(tmp_path.iterdir()) == []


def test_pipeline_int8_static_with_digits_calibration(tmp_path):
    out = tmp_path / "m.onnx"
    rec = run_export(
        ExportConfig(model=PICO, output=str(out), num_classes=10, int8=True, calib="digits",
                     calib_images=8, eval_images=16, threads=1)
    )
    q = rec["int8"]
    assert q["mode"] == "static" and q["path"] == str(int8_path(out)) and int8_path(out).is_file()
    assert q["images"] == 16 and q["int8_size_bytes"] < q["fp32_size_bytes"]
    for key in ("fp32_latency_ms_median", "int8_latency_ms_median", "speedup", "top1_agreement", "fp32_top1"):
        assert key in q
    low, high = q["speedup_paired_range"]
    assert 0 < low <= q["speedup_paired"] <= high
