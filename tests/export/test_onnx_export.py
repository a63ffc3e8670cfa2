"""ONNX export of every attention path, checked in ONNX Runtime; atomic output; bad inputs."""

import json

import pytest
import torch

from attnreuse.bench.weights import randomize_batchnorms
from attnreuse.cli import main
from attnreuse.data import digits_images
from attnreuse.deploy import create_export_model, export_onnx, ort_session, run_ort
from attnreuse.export.pipeline import ExportConfig, record_path, run_export

PICO = "vit_attnreuse_pico_patch4_32"
PLANS = {
    "mha": "mha",
    "reuse": "reuse",
    "grouped_reuse": "reuse:2",
    "share": ["mha", "share"] * 3,
    "skip": ["mha", "mha", "skip", "skip", "mha", "skip"],
    "taylor": "taylor",
}


def _images(n: int = 4, size: int = 32) -> torch.Tensor:
    return digits_images("test", img_size=size, limit=n)[0]


@pytest.mark.parametrize("path", sorted(PLANS))
def test_attention_path_exports_and_matches_eager(tmp_path, path):
    model = create_export_model(PICO, num_classes=10, model_kwargs={"attn_plan": PLANS[path]})
    x = _images()
    out = tmp_path / f"{path}.onnx"
    result = export_onnx(model, out, x, exporter="torchscript", threads=1)
    assert out.is_file() and result.size_bytes == out.stat().st_size
    assert result.max_abs_diff <= 1e-4
    with torch.no_grad():
        want = model(x)
    got = run_ort(ort_session(out, threads=1), x, batch=1)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=lambda m: f"logits ({path}): {m}")
    assert want.abs().max() > 1e-2, "logits near zero would make the parity check vacuous"
    assert result.max_abs_output == pytest.approx(want.abs().max().item())  # the scale the record reports


def test_dynamo_exporter_with_dynamic_batch(tmp_path):
    model = create_export_model(PICO, num_classes=10, model_kwargs={"attn_plan": ["mha", "share", "skip"] * 2})
    x = _images(5)
    out = tmp_path / "dyn.onnx"
    result = export_onnx(model, out, x, exporter="dynamo", dynamic_batch=True, batch=1, threads=1)
    assert result.max_abs_diff <= 1e-4
    session = ort_session(out, threads=1)
    assert not isinstance(session.get_inputs()[0].shape[0], int), "batch dimension should be symbolic"
    with torch.no_grad():
        torch.testing.assert_close(run_ort(session, x), model(x), atol=1e-4, rtol=0)


def test_fixed_batch_is_fixed_and_dynamic_batch_accepts_any(tmp_path):
    model = create_export_model(PICO, num_classes=10)
    x = _images(6)
    fixed, dyn = tmp_path / "fixed.onnx", tmp_path / "dyn.onnx"
    export_onnx(model, fixed, x, batch=2, exporter="torchscript", threads=1)
    export_onnx(model, dyn, x, dynamic_batch=True, exporter="torchscript", threads=1)
    assert ort_session(fixed, threads=1).get_inputs()[0].shape[0] == 2
    with pytest.raises(Exception):
        run_ort(ort_session(fixed, threads=1), x[:3], batch=3)
    for n in (1, 3, 6):
        assert run_ort(ort_session(dyn, threads=1), x[:n]).shape == (n, 10)


def test_failed_parity_leaves_no_file(tmp_path):
    model = create_export_model(PICO, num_classes=10)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ValueError, match="above the tolerance"):
        export_onnx(model, out, _images(2), atol=1e-12, exporter="torchscript", threads=1)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_round_trip_and_num_classes_from_checkpoint(tmp_path):
    src = create_export_model(PICO, num_classes=7)
    ckpt = tmp_path / "w.pth"
    torch.save(src.state_dict(), ckpt)
    model = create_export_model(PICO, checkpoint=ckpt)
    assert model.num_classes == 7
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), atol=0, rtol=0)


def test_cli_writes_onnx_and_record(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    rc = main(["export", PICO, "-o", str(out), "--num-classes", "10", "--threads", "1",
               "--model-kwargs", '{"attn_plan": "reuse"}'])
    assert rc == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "max abs diff" in printed
    rec = json.loads(record_path(out).read_text())
    assert rec["config"]["model_kwargs"] == {"attn_plan": "reuse"}
    assert rec["onnx"]["max_abs_diff"] <= 1e-4 and rec["machine"]["threads"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no_such_model_xyz"], "unknown model 'no_such_model_xyz'"),
        ([PICO, "--model-kwargs", '{"attn_plan": ["share"]}'], "attn_plan"),
    ],
)
def test_cli_bad_model_is_one_clear_error_and_no_file(tmp_path, capsys, argv, message):
    out = tmp_path / "m.onnx"
    rc = main(["export", *argv, "-o", str(out), "--threads", "1"])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_that_does_not_fit_is_rejected_without_a_file(tmp_path):
    ckpt = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), ckpt)
    out = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match="does not fit model"):
        run_export(ExportConfig(model=PICO, output=str(out), checkpoint=str(ckpt), threads=1))
    assert not out.exists() and not record_path(out).exists()


def test_unreadable_checkpoint_and_unwritable_output(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        create_export_model(PICO, checkpoint=junk)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot be written"):
        run_export(ExportConfig(model=PICO, output=str(blocker / "m.onnx"), threads=1))
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        run_export(ExportConfig(model=PICO, output=str(tmp_path / "d.onnx"), threads=1))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(output="m.pt"), "output must name a .onnx file"),
        (dict(opset=0), "opset must be a positive int"),
        (dict(exporter="jit"), "exporter must be one of"),
        (dict(calib="digits"), "add int8=True"),
        (dict(int8=True, calib="/no/such/dir"), "calib must be 'digits' or an ImageFolder"),
        (dict(atol=0.0), "atol must be a positive number"),
        (dict(model_kwargs="reuse"), "model_kwargs must be a dict"),
    ],
)
def test_config_validation(kwargs, message):
    base = dict(model=PICO, output="m.onnx")
    with pytest.raises((ValueError, TypeError), match=message):
        ExportConfig(**{**base, **kwargs})


def test_opset_out_of_range_names_the_exporter(tmp_path):
    model = create_export_model(PICO, num_classes=10)
    with pytest.raises(ValueError, match=r"opset for the dynamo exporter must be an int in \[18, 23\], got 13"):
        export_onnx(model, tmp_path / "m.onnx", _images(1), opset=13, exporter="dynamo")


def test_train_output_directory_as_checkpoint(tmp_path):
    from attnreuse.runs import save_model_weights

    src = create_export_model(PICO, num_classes=10, model_kwargs={"attn_plan": "reuse"})
    run = tmp_path / "run"
    save_model_weights(run / "model.safetensors", src.state_dict())
    (run / "model.json").write_text(json.dumps({"name": PICO, "kwargs": {"num_classes": 10, "attn_plan": "reuse"}}))
    model = create_export_model(PICO, checkpoint=run)
    assert model.attn_plan == ("reuse",) * len(model.attn_plan)
    x = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="holds a 'vit_attnreuse_pico_patch4_32', not a 'vit_reuse_tiny_patch16_224'"):
        create_export_model("vit_reuse_tiny_patch16_224", checkpoint=run)


def test_uniform_exports_folded_and_matches_eager(tmp_path):
    import onnx

    model = randomize_batchnorms(create_export_model("uniform_xs", img_size=64, num_classes=10))
    x = _images(3, size=64)
    out = tmp_path / "u.onnx"
    result = export_onnx(model, out, x, dynamic_batch=True, threads=1)
    with torch.no_grad():
        want = model(x)
    assert want.abs().max() > 0.1
    assert result.max_abs_diff <= 1e-4
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    torch.testing.assert_close(run_ort(ort_session(out, threads=1), x), want, atol=1e-4, rtol=0)
