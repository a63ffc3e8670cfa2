"""The hf jobs on a vision encoder (a tiny random ViT saved with its image processor): the built-in
digits and a directory of images, through analyze, convert, distill, eval and export."""

from __future__ import annotations

import json

import pytest
import torch

from cliutil import run

transformers = pytest.importorskip("transformers")


def _save(directory, model_type="vit", processor_size=16):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(
        model_type, image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=64, initializer_range=0.3)
    transformers.AutoModel.from_config(config).eval().save_pretrained(directory)
    transformers.ViTImageProcessor(size={"height": processor_size, "width": processor_size}).save_pretrained(directory)
    return directory


@pytest.fixture
def vit_dir(tmp_path):
    return _save(tmp_path / "tiny-vit")


def test_every_job_on_the_built_in_digits(tmp_path, capsys, vit_dir):
    code, out, err = run(capsys, "hf", "analyze", "--model", str(vit_dir), "--texts", "16", "--output", str(tmp_path / "a"))
    assert code == 0, err
    record = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert record["text"] == "digits" and record["redundancy"]["texts"] == 16
    assert record["suggestion"]["tokens"] == 17  # 16 patches and the class token
    conv = tmp_path / "conv"
    code, out, err = run(capsys, "hf", "convert", "--model", str(vit_dir), "--plan", "mha,share,reuse,taylor",
                         "--fit-steps", "2", "--output", str(conv))
    assert code == 0 and "zero-shot cosine" in out, err
    zero_shot = json.loads((conv / "convert.json").read_text())["fidelity"]["cosine"]
    assert 0.5 < zero_shot < 1.0
    distilled = tmp_path / "run"
    code, out, err = run(capsys, "hf", "distill", "--teacher", str(vit_dir), "--init", str(conv), "--steps", "3",
                         "--batch-size", "8", "--warmup-steps", "1", "--output", str(distilled))
    assert code == 0, err
    code, out, err = run(capsys, "hf", "eval", "--teacher", str(vit_dir), str(conv), str(distilled), "--rounds", "2",
                         "--repeats", "4", "--runtimes", "eager,ort", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    speed = json.loads((tmp_path / "e.json").read_text())["speed"]
    assert {(s["model"], s["runtime"]) for s in speed} >= {("original (sdpa)", "ort"), (str(distilled), "ort")}
    assert all(s["tokens"] == 17 for s in speed)
    code, out, err = run(capsys, "hf", "export", str(distilled), "--output", str(tmp_path / "m.onnx"), "--int8",
                         "--min-cosine", "0.9")
    assert code == 0 and "dynamic int8" in out, err


def test_a_directory_of_images(tmp_path, capsys, vit_dir):
    from PIL import Image

    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)

    def write(first, last):
        for i in range(first, last):  # RGB and greyscale, two sizes, in a subdirectory too
            pixels = (torch.rand(24 + 8 * (i % 2), 20, 3, generator=g) * 255).byte().numpy()
            img = Image.fromarray(pixels) if i % 3 else Image.fromarray(pixels[..., 0])
            img.save(images / ("sub" if i % 2 else ".") / f"{i:03d}.{'png' if i % 4 else 'jpg'}")

    write(0, 30)
    (images / "notes.txt").write_text("not an image")
    argv = ["hf", "convert", "--model", str(vit_dir), "--plan", "reuse", "--data", str(images), "--output", str(tmp_path / "conv")]
    code, _, err = run(capsys, *argv)
    assert code == 2 and ("3 of the 30 images are held out (every tenth) and the fidelity needs 11; give a directory "
                          "with more images") in err, err
    write(30, 110)
    code, out, err = run(capsys, *argv)
    assert code == 0 and "zero-shot cosine" in out, err
    (images / "broken.png").write_bytes(b"not a png")
    code, out, err = run(capsys, "hf", "eval", "--teacher", str(vit_dir), str(tmp_path / "conv"), "--data", str(images),
                         "--no-speed")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{images / 'broken.png'}: not a readable image" in err


@pytest.mark.parametrize("data, message", [
    ("{tmp}/none", "a vision model reads images: give 'digits' (built in) or a directory"),
    ("{tmp}/empty", "no images below it"),
])
def test_data_that_holds_no_images_is_named(tmp_path, capsys, vit_dir, data, message):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "hf", "convert", "--model", str(vit_dir), "--plan", "reuse", "--data",
                       data.format(tmp=tmp_path), "--output", str(tmp_path / "conv"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "conv").exists()


def test_a_processor_for_another_image_size_and_a_wrong_token_count_are_named(tmp_path, capsys):
    model = _save(tmp_path / "m", processor_size=32)
    code, _, err = run(capsys, "hf", "convert", "--model", str(model), "--plan", "reuse", "--output", str(tmp_path / "c"))
    assert code == 2 and "the image processor makes 32 x 32 images; the model takes 16 x 16" in err, err
    code, _, err = run(capsys, "hf", "analyze", "--model", str(_save(tmp_path / "ok")), "--tokens", "64",
                       "--output", str(tmp_path / "a"))
    assert code == 2 and "--tokens 64: a vit encoder at image_size 16 runs on exactly 17 tokens" in err, err


def test_an_encoder_onnx_cannot_express_fails_in_one_line(tmp_path, capsys):
    """DINOv2 with registers resizes its position embeddings with antialiased bicubic interpolation,
    which the ONNX exporter has no operator for: a traceback ended `hf export` before."""
    model = _save(tmp_path / "m", model_type="dinov2_with_registers")
    assert run(capsys, "hf", "convert", "--model", str(model), "--plan", "reuse", "--no-eval", "--output",
               str(tmp_path / "c"))[0] == 0
    code, _, err = run(capsys, "hf", "export", str(tmp_path / "c"), "--output", str(tmp_path / "m.onnx"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "Dinov2WithRegistersModel cannot be exported to ONNX" in err and not (tmp_path / "m.onnx").exists()


def test_resume_takes_the_image_directory_by_any_path(tmp_path, capsys, vit_dir, monkeypatch):
    """The run recorded a --data directory as typed, so resuming from another working directory
    (the same images by an absolute path) was refused as other data."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(120):
        Image.fromarray((torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()).save(
            images / f"{i:03d}.png")
    conv = tmp_path / "conv"
    assert run(capsys, "hf", "convert", "--model", str(vit_dir), "--plan", "reuse", "--no-eval", "--output", str(conv))[0] == 0
    monkeypatch.chdir(tmp_path)
    common = ["hf", "distill", "--teacher", str(vit_dir), "--init", str(conv), "--steps", "2", "--batch-size", "8",
              "--warmup-steps", "1", "--output", str(tmp_path / "run")]
    assert run(capsys, *common, "--data", "images")[0] == 0
    monkeypatch.chdir(vit_dir)
    code, _, err = run(capsys, *common, "--data", str(images), "--resume")
    assert code == 0, err


def test_resume_after_the_images_changed_is_refused(tmp_path, capsys, vit_dir):
    """The run compared only the --data path: images added, removed or rewritten since the run
    started were trained on without a word, though the resume promises the uninterrupted run's batches."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()

    def save(i):
        Image.fromarray((torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()).save(
            images / f"{i:03d}.png")

    for i in range(120):
        save(i)
    conv = tmp_path / "conv"
    assert run(capsys, "hf", "convert", "--model", str(vit_dir), "--plan", "reuse", "--no-eval", "--output", str(conv))[0] == 0
    argv = ["hf", "distill", "--teacher", str(vit_dir), "--init", str(conv), "--steps", "2", "--batch-size", "8",
            "--warmup-steps", "1", "--data", str(images), "--output", str(tmp_path / "run")]
    assert run(capsys, *argv)[0] == 0
    save(120)
    code, _, err = run(capsys, *argv, "--resume")
    assert code == 2 and f"--resume: the data of --data {images} changed since the run started" in err, err
    (images / "120.png").unlink()
    assert run(capsys, *argv, "--resume")[0] == 0


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_an_image_whose_data_breaks_off_is_named_before_any_work(tmp_path, capsys, vit_dir, suffix):
    """Its header reads, so it was named only when a batch decoded it: minutes into a distillation,
    which could then not resume without it (the data would have changed)."""
    import io

    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(120):
        Image.fromarray((torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()).save(
            images / f"{i:03d}.png")
    whole = io.BytesIO()
    Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(whole, format="PNG" if suffix == "png" else "JPEG")
    (images / f"cut.{suffix}").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    from attnreuse.hf.images import load_images

    with pytest.raises(ValueError, match=f"cut.{suffix}: not a readable image"):
        load_images(str(images))  # where the data is read, before any model runs
    out = tmp_path / "an"
    code, _, err = run(capsys, "hf", "analyze", "--model", str(vit_dir), "--data", str(images), "--output", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{images / f'cut.{suffix}'}: not a readable image" in err
    assert not out.exists()


def test_every_job_on_a_beit_with_relative_position_bias(tmp_path, capsys):
    """BEiT (a relative-position bias per layer, handed to attention as its mask): analyze, convert,
    distil, evaluate in PyTorch and ONNX Runtime (decomposed and fused), export."""
    torch.manual_seed(0)
    config = transformers.BeitConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=4,
                                     num_attention_heads=4, intermediate_size=64, use_relative_position_bias=True)
    model = transformers.BeitModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_(0, 1)  # zero as initialised: a trained model's is not
    directory = tmp_path / "tiny-beit"
    model.save_pretrained(directory)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(directory)
    code, out, err = run(capsys, "hf", "analyze", "--model", str(directory), "--texts", "16", "--output", str(tmp_path / "a"))
    assert code == 0 and "suggested plan" in out, err
    conv = tmp_path / "conv"
    code, out, err = run(capsys, "hf", "convert", "--model", str(directory), "--plan", "mha,share,reuse,taylor",
                         "--output", str(conv))
    assert code == 0 and "zero-shot cosine" in out, err
    distilled = tmp_path / "run"
    code, out, err = run(capsys, "hf", "distill", "--teacher", str(directory), "--init", str(conv), "--steps", "2",
                         "--batch-size", "8", "--warmup-steps", "1", "--output", str(distilled))
    assert code == 0, err
    code, out, err = run(capsys, "hf", "eval", "--teacher", str(directory), str(distilled), "--rounds", "1",
                         "--repeats", "2", "--runtimes", "eager,ort,ort-fused")
    assert code == 0 and "of ideal" in out, err
    code, out, err = run(capsys, "hf", "export", str(distilled), "--output", str(tmp_path / "b.onnx"))
    assert code == 0 and "ONNX Runtime vs PyTorch" in out, err
