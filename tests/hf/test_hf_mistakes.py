"""User mistakes in the `attnreuse hf` jobs end in one line on stderr naming the argument, exit 2,
and nothing written or replaced (found by trying the jobs as a new user would)."""

from __future__ import annotations

import json

import pytest

from attnreuse.cli import main


def _fails(capsys, *argv, needles=()):
    capsys.readouterr()
    code = main(["hf", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert str(needle) in err, err
    return err


@pytest.fixture
def converted(tmp_path, model_dir):
    out = tmp_path / "conv"
    assert main(["hf", "convert", "--model", str(model_dir), "--plan", "mha,share,mha,share", "--no-eval", "--output", str(out)]) == 0
    return out


def test_eval_json_is_not_overwritten_without_force(tmp_path, capsys, model_dir, text_file, converted):
    record = tmp_path / "earlier.json"
    record.write_text("keep")
    argv = ["eval", "--teacher", model_dir, converted, "--text", text_file, "--no-speed", "--json", record]
    _fails(capsys, *argv, needles=(f"--json {record} exists; pass --force",))
    assert record.read_text() == "keep"
    _fails(capsys, *argv[:-1], tmp_path, needles=(f"--json {tmp_path} is a directory",))
    assert main(["hf", *map(str, argv), "--force"]) == 0
    assert '"candidates"' in record.read_text()


@pytest.mark.parametrize("job", ["analyze", "convert", "distill", "eval"])
def test_a_converted_model_is_not_taken_for_the_original(tmp_path, capsys, model_dir, text_file, converted, job):
    """transformers loads a converted directory as the plain model, the weights its plan dropped at random."""
    out = tmp_path / "out"
    argv = {"analyze": ["analyze", "--model", converted, "--output", out],
            "convert": ["convert", "--model", converted, "--plan", "mha", "--output", out],
            "distill": ["distill", "--teacher", converted, "--init", converted, "--steps", "1", "--no-progress", "--output", out],
            "eval": ["eval", "--teacher", converted, converted, "--no-speed"]}[job]
    _fails(capsys, *argv, "--text", text_file, needles=(f"{converted} is a converted model (plan mha,share,mha,share)", str(model_dir)))
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_weights_are_named(tmp_path, capsys, model_dir, damage):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500] if damage == "truncated" else b"not a safetensors file")
    out = tmp_path / "out"
    _fails(capsys, "convert", "--model", model_dir, "--plan", "mha", "--no-eval", "--output", out,
           needles=(f"{model_dir}: its weights are not a readable safetensors file",))
    assert not out.exists()


def test_weights_missing_from_a_checkpoint_are_refused_not_made_up(tmp_path, capsys, model_dir):
    """transformers fills a tensor the checkpoint lacks with random values; the jobs name it instead,
    except the pooler, which the jobs do not read (a masked-LM checkpoint has none)."""
    from safetensors.torch import load_file, save_file

    from hfutil import tiny_config, tiny_tokenizer

    weights = model_dir / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if ".layer.1." not in k}, str(weights), metadata={"format": "pt"})
    out = tmp_path / "out"
    _fails(capsys, "convert", "--model", model_dir, "--plan", "mha", "--no-eval", "--output", out,
           needles=(f"{model_dir}: its weights lack 16 of the BertModel's tensors (e.g. encoder.layer.1.",))
    assert not out.exists()
    mlm = tmp_path / "mlm"
    __import__("transformers").BertForMaskedLM(tiny_config("bert")).save_pretrained(mlm)
    tiny_tokenizer(tmp_path).save_pretrained(mlm)
    assert main(["hf", "convert", "--model", str(mlm), "--plan", "mha", "--no-eval", "--output", str(out)]) == 0



@pytest.mark.parametrize("model, tokens, message", [
    ("bert", "0", "--tokens must be a positive int, got 0"),
    ("bert", "-5", "--tokens must be a positive int, got -5"),
    ("bert", "65", "--tokens 65 exceeds the 64 positions the bert model takes"),
    ("whisper", "5", "--tokens 5: a Whisper encoder takes exactly max_source_positions = 12"),
])  # fmt: skip
@pytest.mark.parametrize("job", ["analyze", "eval"])
def test_tokens_a_model_cannot_take_are_refused(tmp_path, capsys, model_dir, whisper_dir, text_file, converted, job,
                                                model, tokens, message):
    """analyze costed its plan at any --tokens (0 divided by zero; Whisper's one length was not
    enforced), eval crashed in the model on 0 or fewer."""
    teacher = model_dir if model == "bert" else whisper_dir
    out = tmp_path / "out"
    text = ["--text", text_file] if model == "bert" else []
    if job == "analyze":
        argv = ["analyze", "--model", teacher, "--tokens", tokens, *text, "--output", out]
    else:
        argv = ["eval", "--teacher", teacher, converted, "--tokens", tokens, *text, "--rounds", "1", "--repeats", "1"]
    _fails(capsys, *argv, needles=(message,))
    assert not out.exists()


def test_roberta_positions_start_after_the_padding_index():
    from attnreuse.hf.speed import check_tokens

    from hfutil import tiny_config

    config = tiny_config("roberta")  # 70 position embeddings, pad_token_id 1: 68 tokens
    check_tokens(config, 68)
    with pytest.raises(ValueError, match="--tokens 69 exceeds the 68 positions"):
        check_tokens(config, 69)


def _texts(path, count: int, held: bool | None):
    """`count` distinct lines, all held out (crc32 % 10 == 0), none, or the first ones found (None)."""
    import zlib

    lines, i = [], 0
    while len(lines) < count:
        line = f"text number {i} about files and paths"
        if held is None or (zlib.crc32(line.encode()) % 10 == 0) == held:
            lines.append(line)
        i += 1
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("job, lines, held, message", [
    ("convert", 30, None, "texts are held out (crc32(text) % 10 == 0) and the fidelity needs 11"),
    ("fit", 3, True, "0 of the 3 texts are left for training and --fit-steps needs 1"),
    ("analyze", 5, False, "0 of the 5 texts are held out (crc32(text) % 10 == 0) and the analysis needs 2"),
    ("distill", 30, None, "texts are held out (crc32(text) % 10 == 0) and the fidelity needs 11"),
    ("distill", 12, True, "0 of the 12 texts are left for training and --batch-size 32 needs 32"),
    ("eval", 30, None, "texts are held out (crc32(text) % 10 == 0) and the fidelity needs 11"),
])  # fmt: skip
def test_too_few_texts_name_the_file(tmp_path, capsys, model_dir, converted, job, lines, held, message):
    """A short --text file ended in an IndexError traceback, a message naming no argument, or (distill)
    a run directory holding config.json that the next try had to --force away."""
    texts = _texts(tmp_path / "few.txt", lines, held)
    out = tmp_path / "out"
    argv = {"convert": ["convert", "--model", model_dir, "--plan", "mha", "--output", out],
            "fit": ["convert", "--model", model_dir, "--plan", "mha", "--no-eval", "--fit-steps", "1", "--output", out],
            "analyze": ["analyze", "--model", model_dir, "--output", out],
            "distill": ["distill", "--teacher", model_dir, "--init", converted, "--steps", "1", "--no-progress", "--output", out],
            "eval": ["eval", "--teacher", model_dir, converted, "--no-speed"]}[job]
    _fails(capsys, *argv, "--text", texts, needles=(f"--text {texts}: ", message, "give a file with more lines"))
    assert not out.exists()


@pytest.fixture
def wav2vec2_converted(tmp_path):
    from hfutil import tiny_model

    tiny_model("wav2vec2").save_pretrained(tmp_path / "w2v")
    out = tmp_path / "w2v-conv"
    assert main(["hf", "convert", "--model", str(tmp_path / "w2v"), "--plan", "mha", "--no-eval", "--output", str(out)]) == 0
    return out


@pytest.mark.parametrize("student, message", [
    ("wav2vec2", "its model_type is 'wav2vec2', the teacher's 'bert'"),
    ("wide", "its hidden_size is 48, the teacher's 32"),
])  # fmt: skip
@pytest.mark.parametrize("job", ["distill", "eval"])
def test_a_student_of_another_model_is_refused(tmp_path, capsys, model_dir, text_file, wav2vec2_converted, job,
                                               student, message):
    """A wav2vec2 student of a BERT teacher failed in the model's forward, a wider BERT in a
    size-mismatch traceback (distill leaving config.json behind)."""
    from hfutil import tiny_model, tiny_tokenizer

    if student == "wide":
        tiny_model("bert", hidden_size=48).save_pretrained(tmp_path / "wide")
        tiny_tokenizer(tmp_path).save_pretrained(tmp_path / "wide")
        assert main(["hf", "convert", "--model", str(tmp_path / "wide"), "--plan", "mha", "--no-eval", "--output",
                     str(tmp_path / "wide-conv")]) == 0
    init = wav2vec2_converted if student == "wav2vec2" else tmp_path / "wide-conv"
    out = tmp_path / "out"
    argv = (["distill", "--teacher", model_dir, "--init", init, "--steps", "1", "--no-progress", "--output", out]
            if job == "distill" else ["eval", "--teacher", model_dir, init, "--no-speed"])
    flag = "--init" if job == "distill" else "candidate"
    _fails(capsys, *argv, "--text", text_file, needles=(f"{flag} {init} does not fit the teacher: ", message))
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--runtimes", "eager,eager"], "--runtimes names eager more than once, got 'eager,eager'"),
    (["--repeats", "0"], "--repeats must be a positive int, got 0"),
    (["--rounds", "-1"], "--rounds must be a positive int, got -1"),
    (["{conv}/."], "candidate {conv}/. is given twice"),
])  # fmt: skip
def test_eval_settings_that_would_time_nothing_useful(tmp_path, capsys, model_dir, text_file, converted, extra, message):
    """A repeated runtime timed every model twice into duplicate rows, --repeats 0 timed one call a
    round as if asked to, and a candidate named twice became one row: each is refused before any work."""
    extra = [e.format(conv=converted) for e in extra]
    _fails(capsys, "eval", "--teacher", model_dir, converted, *extra, "--text", text_file, "--tokens", "8",
           needles=(message.format(conv=converted),))


def test_texts_longer_than_the_model_takes_are_cut_to_its_positions(tmp_path, capsys, model_dir, converted):
    """The tiny BERT takes 64 tokens: texts of 100+ words ended in a size-mismatch traceback in
    convert's fidelity, analyze's capture, --fit-steps and distill (its default --max-length 128,
    or any above 64), and eval's default --tokens 512 was refused as if the user had given it."""
    import json

    texts = tmp_path / "long.txt"
    texts.write_text("\n".join(f"text {i} " + "file path " * 60 for i in range(120)) + "\n")
    common = ["--text", str(texts)]
    assert main(["hf", "convert", "--model", str(model_dir), "--plan", "mha,reuse,share,reuse", "--fit-steps", "1",
                 *common, "--output", str(tmp_path / "c")]) == 0
    assert main(["hf", "analyze", "--model", str(model_dir), "--texts", "4", *common, "--output", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["suggestion"]["tokens"] == 64
    assert main(["hf", "distill", "--teacher", str(model_dir), "--init", str(converted), "--steps", "1", "--batch-size", "4",
                 "--no-progress", *common, "--output", str(tmp_path / "d")]) == 0
    assert main(["hf", "eval", "--teacher", str(model_dir), str(converted), "--rounds", "1", "--repeats", "1", *common,
                 "--json", str(tmp_path / "e.json")]) == 0
    assert {s["tokens"] for s in json.loads((tmp_path / "e.json").read_text())["speed"]} == {64}


@pytest.mark.parametrize("job", ["analyze", "convert", "distill-teacher", "distill-init"])
def test_output_that_is_an_input_is_refused_even_with_force(tmp_path, capsys, model_dir, text_file, converted, job):
    """--force on an input directory deleted its config.json (analyze, distill) or replaced the
    original model with the converted one (convert)."""
    argv, target, flag = {
        "analyze": (["analyze", "--model", model_dir], model_dir, "--model"),
        "convert": (["convert", "--model", model_dir, "--plan", "mha"], model_dir, "--model"),
        "distill-teacher": (["distill", "--teacher", model_dir, "--init", converted, "--steps", "1"], model_dir, "--teacher"),
        "distill-init": (["distill", "--teacher", model_dir, "--init", converted, "--steps", "1"], converted, "--init"),
    }[job]
    before = sorted(p.name for p in target.iterdir())
    _fails(capsys, *argv, "--text", text_file, "--output", target, "--force",
           needles=(f"--output {target} is the {flag} directory the job reads",))
    assert sorted(p.name for p in target.iterdir()) == before


@pytest.mark.parametrize("score", ["nan", "1.5"])
def test_analyze_min_score_no_similarity_reaches_is_refused(tmp_path, capsys, model_dir, text_file, score):
    """A --min-score no score can reach suggested the all-mha plan as if nothing were redundant."""
    out = tmp_path / "out"
    _fails(capsys, "analyze", "--model", model_dir, "--text", text_file, "--min-score", score, "--output", out,
           needles=("--min-score must be a number <= 1", f"got {float(score)}"))
    assert not out.exists()


def test_a_file_given_as_the_model_directory_is_named_a_file(tmp_path, capsys, model_dir):
    """It was reported as a directory that does not exist."""
    _fails(capsys, "convert", "--model", model_dir / "config.json", "--plan", "mha", "--output", tmp_path / "out",
           needles=(f"model directory {model_dir / 'config.json'} is a file; give the directory that holds its config.json",))


def test_export_to_a_directory_is_refused_before_exporting(tmp_path, capsys, converted):
    """With --force it exported, checked, then failed renaming onto the directory, naming a temporary file."""
    target = tmp_path / "model.onnx"
    target.mkdir()
    _fails(capsys, "export", converted, "--output", target, "--force",
           needles=(f"--output {target} is a directory; give the path of a .onnx file",))
    assert list(target.iterdir()) == [] and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_text_model_without_its_tokenizer_is_refused(tmp_path, capsys, model_dir, text_file):
    """transformers builds a tokenizer with an empty vocabulary from config.json alone: every word
    became [UNK], and the jobs measured and distilled on that without a word."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).unlink()
    out = tmp_path / "out"
    _fails(capsys, "convert", "--model", model_dir, "--plan", "mha", "--text", text_file, "--output", out,
           needles=(f"{model_dir} holds no tokenizer (none of tokenizer.json, vocab.txt", "tokenizer.save_pretrained"))
    assert not out.exists()


@pytest.mark.parametrize("job", ["eval", "export", "distill"])
def test_an_unfinished_distill_run_is_named_as_one(tmp_path, capsys, model_dir, text_file, converted, job):
    """An interrupted run (checkpoints, no model/) was read as a model directory whose config.json
    transformers could not read ('Should have a `model_type` key')."""
    import shutil

    run = tmp_path / "run"
    assert main(["hf", "distill", "--teacher", str(model_dir), "--init", str(converted), "--text", str(text_file),
                 "--steps", "1", "--no-progress", "--output", str(run)]) == 0
    shutil.rmtree(run / "model")
    (run / "summary.json").unlink()
    argv = {"eval": ["eval", "--teacher", model_dir, run, "--text", text_file, "--no-speed"],
            "export": ["export", run, "--output", tmp_path / "m.onnx"],
            "distill": ["distill", "--teacher", model_dir, "--init", run, "--text", text_file, "--output", tmp_path / "o"]}[job]
    _fails(capsys, *argv, needles=(f"{run} is a distillation run that has not finished", f"--resume --output {run}"))


def test_a_text_directory_is_named_a_directory(tmp_path, capsys, model_dir):
    """It was reported as 'no such file'."""
    _fails(capsys, "convert", "--model", model_dir, "--plan", "mha", "--text", tmp_path, "--output", tmp_path / "out",
           needles=(f"--text {tmp_path} is a directory; give a UTF-8 file",))


@pytest.mark.parametrize("job", ["export", "eval", "convert"])
def test_an_unwritable_destination_is_refused_before_the_work(tmp_path, capsys, monkeypatch, model_dir, text_file,
                                                              converted, job):
    """A destination in a directory the user cannot write ended, after the export, the whole
    evaluation or convert's fidelity pass, in a PermissionError traceback. (os.access is patched: the tests may run as root.)"""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(locked) else real(p, mode, **kw))
    target = locked / "new" / {"export": "m.onnx", "eval": "e.json", "convert": "conv"}[job]
    flag = "--json" if job == "eval" else "--output"
    argv = {"export": ["export", converted, "--output", target],
            "eval": ["eval", "--teacher", model_dir, converted, "--text", text_file, "--no-speed", "--json", target],
            "convert": ["convert", "--model", model_dir, "--plan", "mha", "--text", text_file, "--output", target]}[job]
    _fails(capsys, *argv, needles=(f"{flag} {target}: cannot create it, {locked} is not a writable directory",))
    assert list(locked.iterdir()) == []


def test_a_permission_error_is_one_line(capsys, monkeypatch):
    """Wherever it comes from (an output directory, a file the user cannot read): one line, exit 2."""
    from attnreuse.hf import jobs

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/root/model")

    monkeypatch.setattr(jobs, "export_job", denied)
    _fails(capsys, "export", "x", "--output", "y.onnx", needles=("Permission denied: '/root/model'",))


def test_a_batch_larger_than_the_training_texts_is_refused(tmp_path, capsys, model_dir, text_file, converted):
    """It trained every step on all of them, a smaller batch than asked for, recorded as the one asked for."""
    out = tmp_path / "out"
    _fails(capsys, "distill", "--teacher", model_dir, "--init", converted, "--text", text_file, "--batch-size", "500",
           "--steps", "1", "--no-progress", "--output", out,
           needles=("texts are left for training and --batch-size 500 needs 500", "or a smaller --batch-size"))
    assert not out.exists()


def test_a_speech_batch_larger_than_the_clips_names_the_clips(tmp_path, capsys, wav2vec2_converted):
    """Speech models read the built-in clips, which --text does not name."""
    out = tmp_path / "out"
    _fails(capsys, "distill", "--teacher", tmp_path / "w2v", "--init", wav2vec2_converted, "--batch-size", "1000",
           "--steps", "1", "--no-progress", "--output", out,
           needles=("the built-in synthetic clips: 288 of the 320 clips are left for training and --batch-size 1000 needs 1000",))
    assert not out.exists()


@pytest.mark.parametrize("change", ["teacher", "text", "init"])
def test_resume_with_another_teacher_or_text_is_refused(tmp_path, capsys, model_dir, text_file, converted, change):
    """--resume promises the uninterrupted run's batches; with another --text it trained on other
    data, with another --teacher towards another model, and said nothing. Another --init (of
    another plan) was reported as an unreadable checkpoint."""
    import shutil

    run = tmp_path / "run"
    argv = ["distill", "--teacher", str(model_dir), "--init", str(converted), "--text", str(text_file), "--steps", "2",
            "--batch-size", "8", "--checkpoint-every", "1", "--no-progress", "--output", str(run)]
    assert main(["hf", *argv]) == 0
    other = tmp_path / {"teacher": "other-teacher", "text": "other.txt", "init": "other-init"}[change]
    if change == "init":
        assert main(["hf", "convert", "--model", str(model_dir), "--plan", "taylor", "--no-eval", "--output", str(other)]) == 0
    else:
        shutil.copytree(model_dir, other) if change == "teacher" else shutil.copy(text_file, other)
    flag = f"--{change}"
    argv[argv.index(flag) + 1] = str(other)
    before = (run / "summary.json").read_text()
    _fails(capsys, *argv, "--resume", needles=(f"--resume: {run} was distilled with {flag} ", f"not {other.resolve()}"))
    assert (run / "summary.json").read_text() == before
    argv[argv.index(flag) + 1] = str({"teacher": model_dir, "text": text_file, "init": converted}[change])
    if change == "text":  # a changed setting is named with both values (the line named none)
        steps = argv[:]
        steps[steps.index("--steps") + 1] = "5"
        _fails(capsys, *steps, "--resume", needles=(f"--resume: the settings differ from {run / 'config.json'} "
                                                    "(--steps 2 -> 5)", "another --output"))
    assert main(["hf", *argv, "--resume"]) == 0  # the same inputs resume


def test_convert_force_replaces_only_a_converted_model(tmp_path, capsys, model_dir, converted):
    """--force removed whatever directory --output named (a user's files, a distill run in progress)
    and wrote the model in its place."""
    import stat

    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    argv = ["convert", "--model", model_dir, "--plan", "reuse", "--no-eval", "--force", "--output"]
    _fails(capsys, *argv, mine, needles=(f"--output {mine} holds notes.txt, sub, not a converted model",
                                         "choose another directory"))
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "sub").is_dir()
    assert main(["hf", *map(str, argv), str(converted)]) == 0  # an earlier conversion is replaced
    assert json.loads((converted / "config.json").read_text())["attnreuse_plan"] == ["reuse"] * 4
    assert stat.S_IMODE((converted / "model.safetensors").stat().st_mode) == stat.S_IMODE((converted / "config.json").stat().st_mode)
    # a converted model with other things beside it (a user's notes, a distill run under it): kept,
    # where --force used to delete them with the model
    (converted / "ft").mkdir()
    (converted / "ft" / "summary.json").write_text("{}")
    (converted / "notes.txt").write_text("keep")
    _fails(capsys, *argv, converted, needles=(f"--output {converted} holds ft, notes.txt beside a converted model",
                                              "move them out or choose another directory"))
    assert (converted / "notes.txt").read_text() == "keep" and (converted / "ft" / "summary.json").is_file()


@pytest.mark.parametrize("kind", ["bert", "wav2vec2", "vit"])
def test_a_conversion_with_its_preprocessor_may_be_replaced(tmp_path, kind):
    """What `save` writes (config, weights, the tokenizer's or feature extractor's or image
    processor's files) is all `check_replaceable` lets --force delete, for text, speech and vision."""
    import transformers

    from attnreuse.hf.convert import check_replaceable, convert, save
    from hfutil import tiny_model, tiny_tokenizer

    model = tiny_model(kind)
    processor = {"bert": lambda: tiny_tokenizer(tmp_path), "wav2vec2": transformers.Wav2Vec2FeatureExtractor,
                 "vit": transformers.ViTImageProcessor}[kind]()
    out = save(convert(model, "reuse"), tmp_path / "conv", tokenizer=processor)
    check_replaceable(out)  # no error: nothing but the conversion's own files
    (out / "extra.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds extra.txt beside a converted model"):
        check_replaceable(out)


def test_a_plan_edited_against_its_weights_is_named(tmp_path, capsys, model_dir):
    """config.json's plan says mha where the weights hold reuse's one-map query and key: the load's
    size mismatch was a traceback from load_state_dict."""
    converted = tmp_path / "reuse"
    assert main(["hf", "convert", "--model", str(model_dir), "--plan", "reuse", "--no-eval", "--output", str(converted)]) == 0
    path = converted / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "attnreuse_plan": ["mha"] * 4}))
    for argv in (["export", converted, "--output", tmp_path / "m.onnx"],
                 ["eval", "--teacher", model_dir, converted, "--no-speed"]):
        _fails(capsys, *argv, needles=(f"{converted / 'model.safetensors'} does not fit plan ['mha', 'mha', 'mha', 'mha'] "
                                       "in its config.json: size mismatch for",))


@pytest.mark.parametrize("config, needle", [
    ("null", "config.json is not a config transformers can read"),  # a TypeError that did not name the file
    ("wider", "its weights do not fit its config.json"),  # 'For details look at the above report!', a report not shown
])
def test_a_config_json_that_does_not_describe_the_weights_is_named(tmp_path, capsys, model_dir, config, needle):
    path = model_dir / "config.json"
    path.write_text("null" if config == "null" else json.dumps({**json.loads(path.read_text()), "hidden_size": 64}))
    out = tmp_path / "out"
    _fails(capsys, "convert", "--model", model_dir, "--plan", "mha", "--no-eval", "--output", out,
           needles=(str(model_dir), needle))
    assert not out.exists()


def test_a_suggestion_over_the_budget_says_so(tmp_path, capsys, model_dir, text_file):
    """No plan of 4 layers, the first kept mha, reaches 5% of the attention MACs: the suggestion
    came back over the budget with nothing said (its line read 'suggested plan ... (budget 0.05)')."""
    from cliutil import run

    out = tmp_path / "an"
    code, text, err = run(capsys, "hf", "analyze", "--model", str(model_dir), "--text", str(text_file), "--texts", "12",
                          "--tokens", "16", "--budget", "0.05", "--min-score", "0", "--output", str(out))
    assert code == 0, err
    assert "(budget 0.05; over the budget: every layer but the first is changed already)" in text
    suggestion = json.loads((out / "analysis.json").read_text())["suggestion"]
    assert suggestion["macs"] > 0.05 * suggestion["mha_macs"]
    assert suggestion["over_budget"] == "every layer but the first is changed already"


def test_eval_runtimes_no_speed_would_ignore_are_refused(tmp_path, capsys, model_dir, text_file, converted):
    """--no-speed --runtimes ort timed nothing and said nothing."""
    _fails(capsys, "eval", "--teacher", model_dir, converted, "--text", text_file, "--no-speed", "--runtimes", "eager,ort,ort-fused",
           needles=("--runtimes ort,ort-fused would be ignored: --no-speed times nothing",))


@pytest.mark.parametrize("job", ["analyze", "distill"])
def test_force_does_not_strip_a_model_directory(tmp_path, capsys, model_dir, text_file, converted, job):
    """--force removed a run's files from --output, config.json among them: a model directory
    named by mistake was left with its weights and no config.json."""
    other = tmp_path / "other-model"
    import shutil

    shutil.copytree(model_dir, other)
    earlier = shutil.copytree(converted, tmp_path / "earlier-conversion")
    argv = {"analyze": ["analyze", "--model", model_dir],
            "distill": ["distill", "--teacher", model_dir, "--init", converted, "--steps", "1", "--no-progress"]}[job]
    for target in (other, earlier):
        _fails(capsys, *argv, "--text", text_file, "--output", target, "--force",
               needles=(f"--output {target} is a transformers model directory (its config.json names a model_type), not a run",))
        assert (target / "config.json").is_file()


def test_a_distill_run_given_as_the_original_is_named(tmp_path, capsys, model_dir, text_file, converted):
    """It was 'config.json is not a config transformers can read: Unrecognized model ...'."""
    run = tmp_path / "run"
    assert main(["hf", "distill", "--teacher", str(model_dir), "--init", str(converted), "--text", str(text_file),
                 "--steps", "1", "--batch-size", "8", "--no-progress", "--output", str(run)]) == 0
    _fails(capsys, "analyze", "--model", run, "--text", text_file, "--output", tmp_path / "an",
           needles=(f"{run} is an `attnreuse hf distill` run, not a model directory; its distilled model is {run / 'model'}",))


def test_resume_before_the_first_checkpoint_says_how_to_start_again(tmp_path, capsys, model_dir, text_file, converted):
    """Neither --resume (no checkpoint) nor a plain rerun (the run's files) continues such a run; the line said neither what to do."""
    from attnreuse.hf import distill

    def interrupted(*args):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    argv = ["distill", "--teacher", str(model_dir), "--init", str(converted), "--text", str(text_file), "--steps", "2",
            "--batch-size", "8", "--checkpoint-every", "1", "--no-progress", "--output", str(run)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distill, "_save_checkpoint", interrupted)
        assert main(["hf", *argv]) == 130
    _fails(capsys, *argv, "--resume", needles=(f"--resume: {run} has no checkpoint.json", "start the run again with --force"))
    assert main(["hf", *argv, "--force"]) == 0


@pytest.mark.parametrize("name", ["config.json", "job.json", "checkpoint.json"])
def test_a_damaged_run_file_is_named_on_resume(tmp_path, capsys, model_dir, text_file, converted, name):
    """A run file that is not JSON was a bare 'Expecting property name ...' line naming no file."""
    run = tmp_path / "run"
    argv = ["distill", "--teacher", str(model_dir), "--init", str(converted), "--text", str(text_file), "--steps", "2",
            "--batch-size", "8", "--checkpoint-every", "1", "--no-progress", "--output", str(run)]
    assert main(["hf", *argv]) == 0
    (run / name).write_text("{bad")
    _fails(capsys, *argv, "--resume", needles=(f"--resume: {run / name} is not readable JSON", "--force"))


@pytest.mark.parametrize("job", ["eval", "distill"])
def test_a_model_converted_from_another_checkpoint_of_the_same_shape_is_refused(tmp_path, capsys, model_dir, text_file,
                                                                                job):
    """It passed the shape check, and eval measured its fidelity against the wrong original."""
    from hfutil import tiny_model

    other = tmp_path / "other-bert"
    tiny_model("bert", seed=1).save_pretrained(other)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (other / name).write_bytes((model_dir / name).read_bytes())
    conv = tmp_path / "conv-of-other"
    assert main(["hf", "convert", "--model", str(other), "--plan", "reuse", "--no-eval", "--output", str(conv)]) == 0
    argv = {"eval": ["eval", "--teacher", model_dir, conv, "--no-speed"],
            "distill": ["distill", "--teacher", model_dir, "--init", conv, "--steps", "1", "--no-progress",
                        "--output", tmp_path / "run"]}[job]
    flag = "candidate" if job == "eval" else "--init"
    _fails(capsys, *argv, "--text", text_file, needles=(f"{flag} {conv} was not converted from this teacher",))


def test_flags_of_a_skipped_step_are_refused(tmp_path, capsys, model_dir, text_file, converted):
    """`convert --no-eval --text F` read no text and `eval --no-speed --rounds 50` timed nothing,
    both without a word: the flags' defaults could not be told from typed values."""
    out = tmp_path / "out"
    _fails(capsys, "convert", "--model", model_dir, "--plan", "mha", "--no-eval", "--text", text_file, "--output", out,
           needles=(f"--text {text_file} is read for the zero-shot fidelity and --fit-steps",))
    assert not out.exists()
    _fails(capsys, "eval", "--teacher", model_dir, converted, "--no-speed", "--rounds", "50", "--tokens", "64",
           needles=("--tokens, --rounds set the speed test, which --no-speed skips",))
    # with --fit-steps the text is read, and --no-speed alone still runs
    assert main(["hf", "convert", "--model", str(model_dir), "--plan", "mha", "--no-eval", "--fit-steps", "1",
                 "--text", str(text_file), "--output", str(out)]) == 0
    assert main(["hf", "eval", "--teacher", str(model_dir), str(out), "--text", str(text_file), "--no-speed"]) == 0


def test_convert_has_one_writer(tmp_path, capsys, model_dir, converted):
    """A second `hf convert` to an --output another one is writing stops at once: the two used to
    write side by side and the last to finish swept the first's model away (or failed on rename)."""
    from attnreuse._rundir import staged_output

    target = tmp_path / "busy"
    with staged_output(target) as staging:  # what a running `hf convert --output busy` holds
        _fails(capsys, "convert", "--model", model_dir, "--plan", "reuse", "--no-eval", "--output", target,
               needles=(f"--output {target} is in use by another attnreuse command",))
        assert not target.exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".busy")] == [staging]
    with pytest.raises(KeyboardInterrupt):  # so is --force over an earlier conversion (the holder then stops)
        with staged_output(converted):
            _fails(capsys, "convert", "--model", model_dir, "--plan", "reuse", "--no-eval", "--output", converted,
                   "--force", needles=("is in use",))
            raise KeyboardInterrupt
    assert json.loads((converted / "config.json").read_text())["attnreuse_plan"] == ["mha", "share", "mha", "share"]


def test_resume_after_the_text_file_changed_is_refused(tmp_path, capsys, model_dir, text_file, converted):
    """The same --text path with other lines: the resumed steps would train on other texts."""
    run = tmp_path / "run"
    argv = ["distill", "--teacher", model_dir, "--init", converted, "--data", text_file, "--steps", "2",
            "--batch-size", "8", "--checkpoint-every", "1", "--no-progress", "--output", run]
    assert main(["hf", *map(str, argv)]) == 0
    original = text_file.read_text()
    text_file.write_text(original.replace("a", "b", 1))
    _fails(capsys, *argv, "--resume", needles=(f"--resume: the data of --data {text_file} changed since the run started",))
    text_file.write_text(original)
    assert main(["hf", *map(str, argv), "--resume"]) == 0


@pytest.mark.parametrize("typed", ["--text", "--data"])
def test_errors_name_the_data_flag_as_typed(tmp_path, capsys, model_dir, typed):
    """--text and --data are one flag; a line about a text file said --text when --data was typed."""
    missing = tmp_path / "missing.txt"
    _fails(capsys, "analyze", "--model", model_dir, typed, missing, "--texts", "1", "--output", tmp_path / "a",
           needles=("--texts must be at least 2",))  # --texts is another flag: not renamed
    _fails(capsys, "analyze", "--model", model_dir, typed, missing, "--output", tmp_path / "a",
           needles=(f"{typed} {missing}: no such file",))
    _fails(capsys, "convert", "--model", model_dir, "--plan", "reuse", "--no-eval", typed, missing,
           "--output", tmp_path / "c", needles=(f"{typed} {missing} is read for the zero-shot fidelity", f"drop {typed} or"))
