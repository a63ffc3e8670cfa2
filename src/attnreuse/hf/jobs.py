"""The hf jobs behind `attnreuse hf ...`: analyse, convert, distil, evaluate, export.

Each job checks its arguments and its output path before any work, writes atomically, and
returns the record it wrote. Directories: a converted model is a directory `save` writes
(config.json with the plan, model.safetensors, the tokenizer); a distillation run directory holds
config.json, checkpoints/, metrics.jsonl, summary.json and model/ (the distilled converted model).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from attnreuse._io import atomic_path, atomic_write_json, check_creatable, new_output_file
from attnreuse._rundir import claim_output, staged_output
from attnreuse.hf.config import EVAL_TIMING, SCORED_KINDS, SUGGESTED_KINDS

__all__ = ["analyze_job", "convert_job", "distill_job", "eval_job", "export_job"]


def _quiet_transformers() -> None:
    """The jobs print their own progress: transformers' loading bars and load reports stay off."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _model_and_tokenizer(directory: str):
    """The model and what batches its data: a tokenizer, or a waveform batcher (`attnreuse.hf.audio`)."""
    from attnreuse.hf.source import load_preprocessor, load_source

    _quiet_transformers()
    model, _ = load_source(directory)
    return model, load_preprocessor(directory, model.config)


def _converted(directory: str):
    """A converted model and its tokenizer (or waveform batcher) from a `convert` output or a `distill` run directory."""
    from attnreuse.hf.convert import load
    from attnreuse.hf.source import load_preprocessor

    path = Path(directory)
    if (path / "summary.json").is_file() and (path / "model").is_dir():
        path = path / "model"
    elif (path / "job.json").is_file() and not (path / "model").is_dir():  # its config.json is the DistillConfig
        raise ValueError(f"{directory} is a distillation run that has not finished (no model/ yet); "
                         f"finish it with `attnreuse hf distill ... --resume --output {directory}`")
    model = load(path)
    return model, load_preprocessor(path, model.config)


# Fidelity's top-10 overlap ranks each held-out text's 10 nearest others: it needs 11 texts.
FIDELITY_TEXTS = 11


def _enough(config, data: tuple[list, list], text: str, need: int, held_out: bool, what: str, instead: str = "") -> None:
    """Raise ValueError naming --text / --data (the built-in clips or images) unless `data`
    (train, held-out) has `need` held-out (or training) items."""
    from attnreuse.hf.hosts import VISION_INPUTS, host_for
    from attnreuse.hf.source import data_name

    have = len(data[1] if held_out else data[0])
    if have < need:
        name = data_name(config, text)
        if host_for(config).inputs in VISION_INPUTS:
            source = f"--data {name}" if name == text else f"the built-in {name} images"
            items, rule, more = "images", "(every tenth)", "a directory with more images" if name == text else "less"
        elif name == text:
            source, items, rule, more = f"--text {text}", "texts", "(crc32(text) % 10 == 0)", "a file with more lines"
        else:
            source, items, rule, more = f"the built-in {name} clips", "clips", "(every tenth)", "less"
        part = f"are held out {rule}" if held_out else "are left for training"
        raise ValueError(f"{source}: {have} of the {len(data[0]) + len(data[1])} {items} {part} and {what} needs "
                         f"{need}; give {more}{instead}")


def _not_an_input(output: str, *inputs: tuple[str, str]) -> None:
    """Raise ValueError unless --output is a directory other than every (flag, directory) the job
    reads: --force would otherwise delete the input's config.json (or replace the whole model)."""
    for flag, directory in inputs:
        if Path(output).resolve() == Path(directory).resolve():
            raise ValueError(f"--output {output} is the {flag} directory the job reads; write to another directory")


def _check_student(teacher, student, directory: str, flag: str) -> None:
    """Raise ValueError naming `flag` unless `student` (a converted model) has the teacher's family,
    width, depth and vocabulary: the jobs feed both the teacher's batches and compare their states."""
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        mine, theirs = getattr(student.config, key, None), getattr(teacher.config, key, None)
        if mine != theirs:
            raise ValueError(f"{flag} {directory} does not fit the teacher: its {key} is {mine!r}, the teacher's "
                             f"{theirs!r}; give a model converted from the teacher")
    # A model of the same shape converted from another checkpoint (all-MiniLM-L6-v2 and
    # paraphrase-MiniLM-L6-v2 have one config) passed, its fidelity measured against the wrong
    # original. Conversion and distillation keep the input stem as it was: it must be the teacher's.
    mine, theirs = _stem(student), _stem(teacher)
    if len(mine) != len(theirs) or not all(torch.equal(a, b) for a, b in zip(mine, theirs)):
        raise ValueError(f"{flag} {directory} was not converted from this teacher: its input stem (embeddings or "
                         "feature encoder, which conversion and distillation keep) differs from the teacher's; "
                         "give a model converted from the teacher")


def _stem(model) -> list[torch.Tensor]:
    """The weights of a model's input stem (`attnreuse.hf.hosts.input_stem`)."""
    from attnreuse.hf.hosts import input_stem

    return [t.detach() for t in input_stem(model).state_dict().values()]


def _frontier_plot(path: Path, suggestion: dict) -> None:
    """Predicted loss against attention MACs of every frontier plan, the suggestion marked; the steps
    read as the least loss any budget on the x axis allows (the next frontier plan within it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = suggestion["frontier"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step([f["macs_fraction"] for f in front], [f["predicted_loss"] for f in front], where="pre", marker="o", ms=3)
    ax.plot([suggestion["macs"] / suggestion["mha_macs"]], [suggestion["predicted_loss"]], "r*", ms=12, label="suggested")
    ax.axvline(suggestion["budget"], color="grey", ls="--", lw=1, label="--budget")
    ax.set(xlabel="attention MACs (fraction of all-mha)", ylabel="predicted loss (summed 1 - score)",
           title=f"plans no other beats on both ({suggestion['tokens']} tokens)")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _heatmap(path: Path, matrix: torch.Tensor, title: str, xlabel: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * matrix.shape[1], 1.0 + 0.45 * matrix.shape[0]))
    im = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="viridis")
    for (i, j), v in ((ij, matrix[ij].item()) for ij in ((i, j) for i in range(matrix.shape[0]) for j in range(matrix.shape[1]))):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_yticks(range(matrix.shape[0]))
    fig.colorbar(im, ax=ax, fraction=0.046)
    _save_png(fig, path)


def analyze_job(model_dir: str, output: str, *, text: str = "stdlib", texts: int = 64, tokens: int | None = None,
                budget: float = 0.67, min_score: float = 0.5, kinds: tuple[str, ...] = SUGGESTED_KINDS,
                force: bool = False) -> dict:
    from attnreuse.hf.analyze import capture, suggest
    from attnreuse.hf.hosts import host_for
    from attnreuse.hf.source import data_name, load_data
    from attnreuse.hf.speed import default_tokens

    if texts < 2:
        raise ValueError(f"--texts must be at least 2, got {texts}")
    if not 0 < budget <= 1:
        raise ValueError(f"--budget must be a fraction in (0, 1], got {budget}")
    if not min_score <= 1:  # nan too: no score compares >= nan, so every layer stayed mha
        raise ValueError(f"--min-score must be a number <= 1 (the scores are map cosines and CKA, at most 1), got {min_score}")
    unknown = [k for k in kinds if k not in SCORED_KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"--kinds must name each of {', '.join(SCORED_KINDS)} at most once (the kinds a similarity "
                         f"scores), got {','.join(kinds)!r}")
    _not_an_input(output, ("--model", model_dir))
    with claim_output(output, force=force) as out:
        model, tok = _model_and_tokenizer(model_dir)
        tokens = default_tokens(model.config, tokens)  # checked before the capture
        data = load_data(model.config, text)
        _enough(model.config, data, text, 2, True, "the analysis")
        red = capture(model, tok, data[1][:texts])
        host = host_for(model.config)
        module = host.attention_modules(model)[0][2]
        src = host.source(module, model.config.num_attention_heads)
        prepare = None
        if host.relative:  # a DeBERTa layer's scores cost its relative terms too
            from attnreuse.hf.disentangled import costing_term

            def prepare(core):
                costing_term(core, module, tokens)
        plan = suggest(red, src, tokens=tokens, budget=budget, min_score=min_score, kinds=tuple(kinds), prepare=prepare)
        record = {"model": str(model_dir), "text": data_name(model.config, text), "redundancy": red.to_json(), "suggestion": plan}
        _heatmap(out / "head_to_mean.png", red.head_to_mean, "cos(head map, layer's mean map)", "head", "layer")
        _heatmap(out / "layer_map_cosine.png", red.layer_map_cosine, "same-head map cosine between layers", "layer", "layer")
        _heatmap(out / "output_cka.png", red.output_cka, "attention-output CKA between layers", "layer", "layer")
        _frontier_plot(out / "frontier.png", plan)
        atomic_write_json(out / "analysis.json", record)
    return record


def convert_job(model_dir: str, plan: str, output: str, *, text: str = "stdlib", evaluate: bool = True,
                fit_steps: int = 0, force: bool = False) -> dict:
    from attnreuse.hf.convert import check_replaceable, convert, plan_of, write_converted
    from attnreuse.hf.fidelity import embed, fidelity
    from attnreuse.hf.fit import fit_layers
    from attnreuse.hf.source import load_data

    def check(target: Path) -> None:  # before any work, and again before the result replaces --output
        if target.exists() and not target.is_dir():
            raise FileExistsError(f"--output {target} is an existing file; give a directory path")
        if target.exists() and not force:
            raise FileExistsError(f"--output {target} exists; pass --force to replace it")
        check_replaceable(target, "--output ")  # --force replaces an earlier conversion, nothing else

    target = Path(output)
    _not_an_input(output, ("--model", model_dir))
    check(target)
    if isinstance(fit_steps, bool) or not isinstance(fit_steps, int) or fit_steps < 0:
        raise ValueError(f"--fit-steps must be an int >= 0, got {fit_steps!r}")
    check_creatable("--output", target)
    # staged beside --output and renamed onto it at the end: one writer, and never a half-written model
    with staged_output(target, check=check) as staging:
        model, tok = _model_and_tokenizer(model_dir)
        train, held = load_data(model.config, text) if evaluate or fit_steps else (None, None)
        if evaluate:
            _enough(model.config, (train, held), text, FIDELITY_TEXTS, True, "the fidelity")
        if fit_steps:
            _enough(model.config, (train, held), text, 1, False, "--fit-steps")
        converted = convert(model, plan)
        record = {"source": str(model_dir), "plan": plan_of(converted), "fit_steps": fit_steps}
        reference = embed(model, tok, held) if evaluate else None
        if evaluate and fit_steps:
            record["fidelity_retrofit"] = fidelity(converted.eval(), reference, tok, held)
        if fit_steps:
            losses = fit_layers(converted, model, tok, train, steps=fit_steps)
            record["fit_loss"] = {"first": losses[0], "last": losses[-1]} if losses else None
        if evaluate:
            record["fidelity"] = fidelity(converted.eval(), reference, tok, held)
        converted.config.attnreuse_source = str(Path(model_dir).resolve())
        write_converted(converted, staging, tokenizer=tok)
        atomic_write_json(staging / "convert.json", record)
    return record


def distill_job(teacher_dir: str, init_dir: str, output: str, cfg, *, text: str = "stdlib", resume: bool = False,
                force: bool = False, progress: bool = True) -> dict:
    from dataclasses import asdict

    from attnreuse.hf.convert import save
    from attnreuse.hf.distill import read_run_json, run_distillation
    from attnreuse.hf.fidelity import fidelity
    from attnreuse.hf.source import data_fingerprint, data_flag, data_name, load_data

    if resume and force:
        raise ValueError("--resume continues a run and --force replaces it; give one of them")
    _not_an_input(output, ("--teacher", teacher_dir), ("--init", init_dir))
    # the run's teacher, student and data as paths that do not depend on the working directory (--resume compares them)
    inputs = {"teacher_path": str(Path(teacher_dir).resolve()), "init_path": str(Path(init_dir).resolve()),
              "text_path": str(Path(text).resolve()) if Path(text).exists() else text}
    recorded = {}
    with claim_output(output, force=force, resume=resume) as out:
        if resume:
            saved = out / "config.json"
            if not saved.is_file():
                raise FileNotFoundError(f"--resume: {out} holds no distillation run (no config.json)")
            before, now = read_run_json(saved), asdict(cfg)
            if before != now:  # name them: a longer --steps is the usual one (a finished run is not extended)
                diff = [f"--{k.replace('_', '-')} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(before.keys() | now)
                        if before.get(k) != now.get(k)]
                raise ValueError(f"--resume: the settings differ from {saved} ({', '.join(diff[:3])}"
                                 f"{' and more' if len(diff) > 3 else ''}); resume with the same flags or --config "
                                 f"{saved}, or start a new run in another --output")
            recorded = read_run_json(out / "job.json") if (out / "job.json").is_file() else {}
            # another teacher, data or student: no exact continuation (a checkpoint of another plan
            # would not even load into the --init model)
            for key, flag in (("teacher_path", "--teacher"), ("text_path", "--text"), ("init_path", "--init")):
                if key in recorded and recorded[key] != inputs[key]:
                    raise ValueError(f"--resume: {out} was distilled with {flag} {recorded[key]}, not {inputs[key]}; "
                                     f"resume with the same {flag}")
        teacher, tok = _model_and_tokenizer(teacher_dir)
        student, _ = _converted(init_dir)
        _check_student(teacher, student, init_dir, "--init")
        train, held = load_data(teacher.config, text)
        fingerprint = data_fingerprint(train, held)
        if resume and recorded.get("data_sha256", fingerprint) != fingerprint:
            raise ValueError(f"--resume: the data of {data_flag(teacher.config)} {data_name(teacher.config, text)} changed "
                             "since the run started; an exact resume needs the same data: restore it, or start again "
                             "with --force")
        _enough(teacher.config, (train, held), text, FIDELITY_TEXTS, True, "the fidelity")
        # a batch larger than the training texts would silently be all of them, every step
        _enough(teacher.config, (train, held), text, cfg.batch_size, False, f"--batch-size {cfg.batch_size}",
                " or a smaller --batch-size")
        # the student's fidelity before any step: measured once, when the run starts, and kept in job.json
        before = recorded.get("fidelity_before") if resume else fidelity(student, teacher, tok, held)
        # written once the inputs have been read and checked: a run that fails before is no run to --force away
        atomic_write_json(out / "config.json", asdict(cfg))
        atomic_write_json(out / "job.json", {"teacher": str(teacher_dir), "init": str(init_dir),
                                                  "text": data_name(teacher.config, text), **inputs,
                                                  "data_sha256": fingerprint, "fidelity_before": before})
        t0 = time.perf_counter()
        result = run_distillation(student, teacher, tok, train, cfg, out, resume=resume, progress=progress)
        after = fidelity(student, teacher, tok, held)
        save(student, out / "model", tokenizer=tok, overwrite=True)
        summary = {**result, "wall_s": time.perf_counter() - t0, "fidelity_before": before, "fidelity": after,
                   "plan": student.config.attnreuse_plan}
        atomic_write_json(out / "summary.json", summary)
    return summary


def eval_job(teacher_dir: str, candidates: list[str], *, text: str = "stdlib", tokens: int | None = None,
             runtimes: tuple[str, ...] = ("eager",), rounds: int = EVAL_TIMING["rounds"],
             repeats: int = EVAL_TIMING["repeats"], threads: int = EVAL_TIMING["threads"],
             speed: bool = True, json_path: str | None = None, force: bool = False) -> dict:
    from attnreuse.hf.fidelity import embed, fidelity
    from attnreuse.hf.source import data_name, load_data
    from attnreuse.hf.speed import BF16, RUNTIMES, default_tokens, measure_speed

    if not candidates:
        raise ValueError("give at least one converted model directory to evaluate")
    new_output_file("--json", json_path, force=force)  # before minutes of work; an earlier record is kept
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise ValueError(f"--runtimes must be a comma-separated list of {', '.join(RUNTIMES)}, got {','.join(runtimes)!r}")
    repeated = sorted({r for r in runtimes if runtimes.count(r) > 1})
    if repeated:
        raise ValueError(f"--runtimes names {', '.join(repeated)} more than once, got {','.join(runtimes)!r}")
    ignored = [r for r in runtimes if r not in ("eager", "ort-int8", BF16)]  # eager: the default; the others: fidelity
    if not speed and ignored:
        raise ValueError(f"--runtimes {','.join(ignored)} would be ignored: --no-speed times nothing (of the runtimes, "
                         f"only ort-int8's and {BF16}'s fidelity is measured without it); drop --no-speed or those runtimes")
    twice = [c for i, c in enumerate(candidates) if Path(c).resolve() in {Path(d).resolve() for d in candidates[:i]}]
    if twice:
        raise ValueError(f"candidate {twice[0]} is given twice; name each model once")
    for flag, value in (("--rounds", rounds), ("--repeats", repeats), ("--threads", threads)):
        if speed and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{flag} must be a positive int, got {value!r}")
    teacher, tok = _model_and_tokenizer(teacher_dir)
    tokens = default_tokens(teacher.config, tokens) if speed else tokens  # checked before the fidelity pass
    models = {}
    for c in candidates:
        models[str(c)], _ = _converted(c)
        _check_student(teacher, models[str(c)], c, "candidate")
    data = load_data(teacher.config, text)
    _enough(teacher.config, data, text, FIDELITY_TEXTS, True, "the fidelity")
    held = data[1]
    reference = embed(teacher, tok, held)
    rows = {name: {"plan": m.config.attnreuse_plan, "fidelity": fidelity(m, reference, tok, held)} for name, m in models.items()}
    speed_records, int8 = [], {}
    original = f"original ({teacher.config._attn_implementation})"  # "sdpa" but where the family has only eager
    with tempfile.TemporaryDirectory() as work:
        if speed:
            speed_records = measure_speed({original: teacher, **models}, original, teacher.config,
                                          tokens=tokens, runtimes=runtimes, rounds=rounds,
                                          repeats=repeats, threads=threads, workdir=work)
        if "ort-int8" in runtimes:  # what the int8 graphs keep (the ones timed), on the held-out texts or clips
            from attnreuse.hf.export import int8_fidelity
            from attnreuse.hf.speed import export_path

            int8 = {name: int8_fidelity(m, reference, tok, held, work, threads=threads,
                                        exported=export_path(work, name, int8=True) if speed else None)
                    for name, m in {original: teacher, **models}.items()}
    record = {"teacher": str(teacher_dir), "text": data_name(teacher.config, text), "candidates": rows, "speed": speed_records}
    if int8:
        record["int8_fidelity"] = int8
    if BF16 in runtimes:  # what bf16 keeps of each model, the original included, against the float32 original
        from attnreuse.cpu_units import dtype_support
        from attnreuse.hf.fidelity import bf16_fidelity

        record["bf16_fidelity"] = {name: bf16_fidelity(m, reference, tok, held) for name, m in {original: teacher, **models}.items()}
        record["bf16_execution"] = dtype_support("bfloat16")["execution"]
    if json_path:
        atomic_write_json(json_path, record)
    return record


def export_job(model_dir: str, output: str, *, force: bool = False, max_length: int = 64,
               fused_attention: str | None = None, int8: bool = False, min_cosine: float = 0.98) -> dict:
    from attnreuse.hf.export import export_encoder
    from attnreuse.hf.hosts import SPEECH_INPUTS, VISION_INPUTS, host_for
    from attnreuse.hf.text import stdlib_docstrings
    from attnreuse.onnx_fuse import FUSED_OPS

    if fused_attention is not None and fused_attention not in FUSED_OPS:
        raise ValueError(f"--fused-attention must be one of {', '.join(FUSED_OPS)}, got {fused_attention!r}")
    if not -1.0 <= min_cosine <= 1.0:  # NaN too; before the model loads
        raise ValueError(f"--min-cosine must be a number in [-1, 1], got {min_cosine!r}")
    if min_cosine != 0.98 and not int8:
        raise ValueError("--min-cosine gates the int8 graph; it needs --int8")

    target = Path(output)
    if target.is_dir():  # --force cannot replace a directory with a file: say so before the export
        raise IsADirectoryError(f"--output {target} is a directory; give the path of a .onnx file")
    new_output_file("--output", target, force=force)
    if target.suffix != ".onnx":
        raise ValueError(f"--output must name a .onnx file, got {target}")
    model, tok = _converted(model_dir)
    if host_for(model.config).inputs in SPEECH_INPUTS:
        from attnreuse.hf.audio import synthetic_clips

        texts = synthetic_clips(model.config, 8, seed=1)  # clips of several lengths: the check runs with padding
    elif host_for(model.config).inputs in VISION_INPUTS:
        from attnreuse.hf.images import BUILTIN, load_images

        texts = load_images(BUILTIN)[:8]
    else:
        texts = stdlib_docstrings(limit=8)  # real text of several lengths, so the check runs with padding
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    result = export_encoder(model, target, batch, fused_attention=fused_attention, int8=int8, min_cosine=min_cosine)
    return {"path": result.path, "size_bytes": result.size_bytes, "max_abs_diff": result.max_abs_diff,
            "max_abs_output": result.max_abs_output, "relative_diff": result.relative_diff,
            "fused_attention": result.fused_attention, "fused_attention_nodes": result.fused_attention_nodes,
            "int8": result.int8, "int8_min_cosine": result.int8_min_cosine}
