"""User mistakes found by the audit of train, convert, analyze and export (2026-12-01): each ends in
one line naming the argument or file, a non-zero exit, and no run or input lost."""


import pytest
from cliutil import fails


PICO = "vit_attnreuse_pico_patch4_32"


def _files(d):
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("argv, flag", [
    (["convert", "--checkpoint", "{run}", "--plan", "reuse"], "--checkpoint"),
    (["analyze", "--checkpoint", "{run}"], "--checkpoint"),
    (["train", "--init", "{run}", "--epochs", "1"], "--init"),
])
def test_a_run_is_not_written_over_its_own_input(capsys, pico_run, argv, flag):
    # `convert --checkpoint R --output R --force` deleted R's model.json and weights before reading them
    before = _files(pico_run)
    argv = [a.replace("{run}", str(pico_run)) for a in argv]
    fails(capsys, [*argv, "--output", str(pico_run), "--force"], f"--output {pico_run} is or holds the {flag}")
    assert _files(pico_run) == before


def test_an_input_inside_the_runs_checkpoints_is_kept(capsys, tmp_path, pico_run):
    out = tmp_path / "out"
    weights = out / "checkpoints" / "epoch_0001" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes((pico_run / "model.safetensors").read_bytes())
    argv = ["analyze", "--model", PICO, "--model-kwargs", "depth=1", "--checkpoint", str(weights)]
    fails(capsys, [*argv, "--output", str(out), "--force"], "is or holds the --checkpoint")
    assert weights.is_file()


def test_resume_and_force_contradict(capsys, pico_run):
    # `train --resume --force` resumed and ignored --force, exit 0
    fails(capsys, ["train", "--model", PICO, "--output", str(pico_run), "--resume", "--force"],
          "--resume continues the run", "--force replaces it; give one of them")


@pytest.mark.parametrize("name, text, needle", [
    ("model.json", '{"name": "vit_attnreuse_pico', "model.json is not valid JSON"),
    ("model.json", '{"nm": 1}', "model.json holds no 'name', 'kwargs'"),
    ("checkpoint.json", '{"epoch": 1,', "checkpoint.json is not valid JSON"),
])
@pytest.mark.parametrize("argv", [
    ["convert", "--plan", "reuse", "--checkpoint"],
    ["analyze", "--checkpoint"],
    ["export", PICO, "--output", "{tmp}/m.onnx", "--checkpoint"],
])
def test_a_damaged_run_file_is_named(capsys, tmp_path, pico_run, name, text, needle, argv):
    # a truncated model.json was a bare "Expecting ',' delimiter ..." (no file named), one without
    # "name" a KeyError traceback
    (pico_run / name).write_text(text)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    extra = [] if argv[0] == "export" else ["--output", str(tmp_path / "out")]
    fails(capsys, [*argv, str(pico_run), *extra], str(pico_run / name), needle)


@pytest.mark.parametrize("argv", [["convert", "--plan", "reuse"], ["analyze"]])
def test_a_missing_checkpoint_is_named_as_missing(capsys, tmp_path, argv):
    # said "is not a train output directory: give --model", and with --model "neither a .safetensors file nor a directory"
    missing = tmp_path / "no_such_run"
    fails(capsys, [*argv, "--checkpoint", str(missing), "--output", str(tmp_path / "out")],
          f"--checkpoint {missing}: no such file or directory")


def test_analyze_refuses_model_kwargs_its_run_overrides(capsys, tmp_path, pico_run):
    # `analyze --checkpoint RUN --model-kwargs depth=3` analysed the run's model and exited 0
    fails(capsys, ["analyze", "--checkpoint", str(pico_run), "--model-kwargs", "depth=3", "--output", str(tmp_path / "o")],
          "drop --model-kwargs", str(pico_run))
    assert not (tmp_path / "o").exists()


def test_a_plan_that_is_broken_json_names_the_plan(capsys, tmp_path, pico_run):
    fails(capsys, ["convert", "--checkpoint", str(pico_run), "--plan", '["mha"', "--output", str(tmp_path / "o")],
          """plan '["mha"' is not a valid JSON list""")


def _folder(root, images=3, extra=None):
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(images):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / cls / f"{i}.png")
    if extra:
        (root / "a" / extra).write_bytes(b"\x89PNG\r\n\x1a\ncut short")
    return root


def test_an_unreadable_image_is_named(tmp_path):
    # PIL.UnidentifiedImageError's traceback in the middle of an epoch
    from attnreuse.data import open_data

    data = open_data(str(_folder(tmp_path / "imgs", extra="broken.png")))
    with pytest.raises(ValueError, match=r"image .*broken\.png cannot be read \(.*\); remove or replace it"):
        for split in (data.train, data.val, data.test):
            for i in range(len(split)):
                split[i]


@pytest.mark.parametrize("make, needle", [
    (lambda root: root.mkdir(), "Couldn't find any class folder"),
    (lambda root: (root / "a").mkdir(parents=True) or (root / "a" / "notes.txt").write_text("x"), "no valid file"),
])
def test_an_image_folder_without_images_is_named(capsys, tmp_path, make, needle):
    root = tmp_path / "imgs"
    make(root)
    fails(capsys, ["train", "--model", PICO, "--data", str(root), "--output", str(tmp_path / "o")],
          f"data directory {root}: ", needle)


def test_a_data_loader_workers_error_is_one_line(capsys, monkeypatch):
    # with --workers N the error came back with the worker's traceback in its message
    from torch.utils.data import DataLoader, Dataset

    class Broken(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            raise ValueError("image x.png cannot be read")

    monkeypatch.setattr("attnreuse.analysis.cli.run", lambda args: list(DataLoader(Broken(), num_workers=1)))
    err = fails(capsys, ["analyze", "--model", PICO, "--output", "o"])
    assert err == "attnreuse analyze: error: image x.png cannot be read"


def test_resume_drops_a_metrics_line_cut_short(tmp_path):
    # a run killed mid-write left half a line in metrics.jsonl: every --resume then failed on it
    from attnreuse.train.loop import _truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0, "loss": 1}\n{"epoch": 1, "loss": 0.5}\n{"epoch": 1, "lo')
    _truncate_metrics(path, 1)
    assert path.read_text() == '{"epoch": 0, "loss": 1}\n'
    path.write_text('{"epoch": 0, "lo\n{"epoch": 1, "loss": 0.5}\n')
    with pytest.raises(ValueError, match="metrics.jsonl line 1 is not a metrics record"):
        _truncate_metrics(path, 1)


def test_export_reads_its_int8_images_before_writing_the_onnx(capsys, tmp_path):
    # an unusable --calib failed after FILE.onnx was written, so the corrected rerun was refused
    (tmp_path / "empty").mkdir()
    out = tmp_path / "m.onnx"
    fails(capsys, ["export", PICO, "--output", str(out), "--int8", "--calib", str(tmp_path / "empty"),
                   "--check-images", "2"], f"data directory {tmp_path / 'empty'}")
    assert not out.exists()


def test_export_says_when_its_weights_are_random(capsys, tmp_path, pico_run):
    from attnreuse import cli

    argv = ["export", PICO, "--model-kwargs", "depth=1", "--check-images", "2", "--threads", "1"]
    assert cli.main([*argv, "--output", str(tmp_path / "r.onnx")]) == 0
    assert "random weights (no --checkpoint)" in capsys.readouterr().out
    assert cli.main([*argv[:2], *argv[4:], "--checkpoint", str(pico_run), "--output", str(tmp_path / "c.onnx")]) == 0
    assert "random weights" not in capsys.readouterr().out


@pytest.mark.parametrize("extra, needle", [
    (["--teacher-kwargs", "depth=2"], "drop --teacher-kwargs"),
    (["--teacher-checkpoint", "{run}"], "is a run directory, which holds the teacher's weights: drop --teacher-checkpoint"),
])
def test_a_teacher_run_takes_no_arguments_it_would_ignore(capsys, tmp_path, pico_run, extra, needle):
    # `--teacher RUN --teacher-kwargs depth=2` trained against RUN's own teacher and exited 0
    extra = [a.replace("{run}", str(pico_run)) for a in extra]
    fails(capsys, ["train", "--model", PICO, "--teacher", str(pico_run), *extra, "--epochs", "1",
                   "--output", str(tmp_path / "o")], needle)
    assert not (tmp_path / "o").exists()


def test_export_of_weights_that_do_not_fit_is_one_short_line(capsys, tmp_path, pico_run):
    # printed load_state_dict's whole multi-line error (every missing key)
    err = fails(capsys, ["export", PICO, "--checkpoint", str(pico_run / "model.safetensors"),
                         "--output", str(tmp_path / "m.onnx")], "does not fit model", "Missing key(s)", "more")
    assert len(err) < 400 and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("argv", [
    ["train", "--model", PICO, "--epochs", "1"],
    ["analyze", "--model", PICO],
])
def test_a_run_directory_that_cannot_be_made_is_named(capsys, tmp_path, argv):
    # "[Errno 20] Not a directory: '.../a/run'" named no flag
    (tmp_path / "a").write_text("a file")
    out = tmp_path / "a" / "run"
    fails(capsys, [*argv, "--output", str(out)], f"--output {out}: cannot write a run there", "Not a directory")


@pytest.mark.parametrize("argv, target, hint", [
    (["train", "--model", PICO, "--epochs", "2"], "attnreuse.train.loop.train", True),
    (["convert", "--checkpoint", "{run}", "--plan", "reuse"], "attnreuse.train.convert.convert", False),
])
def test_ctrl_c_suggests_resume_only_where_there_is_one(capsys, monkeypatch, tmp_path, pico_run, argv, target, hint):
    # convert and analyze were told that `--resume` continues them; they have no --resume
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    argv = [a.replace("{run}", str(pico_run)) for a in argv]
    err = fails(capsys, [*argv, "--output", str(tmp_path / "o")], "interrupted; files already written are complete", rc=130)
    assert ("--resume" in err) is hint


def test_init_and_config_paths_say_what_they_are(capsys, tmp_path, pico_run):
    fails(capsys, ["train", "--init", str(tmp_path / "nope"), "--output", str(tmp_path / "o")],
          f"--init {tmp_path / 'nope'}: no such directory")
    fails(capsys, ["train", "--init", str(pico_run / "model.json"), "--output", str(tmp_path / "o")],
          "model.json: is a file; give a train/convert output directory")
    fails(capsys, ["train", "--model", PICO, "--config", str(tmp_path), "--output", str(tmp_path / "o")],
          f"--config {tmp_path} is a directory; give a saved TrainConfig JSON file")
    (tmp_path / "binary.json").write_bytes(b"\xac\xff\x00 not text")  # named neither flag nor file
    fails(capsys, ["train", "--model", PICO, "--config", str(tmp_path / "binary.json"), "--output", str(tmp_path / "o")],
          f"--config {tmp_path / 'binary.json'}: not valid JSON ('utf-8' codec can't decode")
    (tmp_path / "list.json").write_text("[1, 2]")
    fails(capsys, ["train", "--model", PICO, "--config", str(tmp_path / "list.json"), "--output", str(tmp_path / "o")],
          f"--config {tmp_path / 'list.json'}: holds a JSON list, not a saved TrainConfig object")
