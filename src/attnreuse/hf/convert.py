"""Converting a `transformers` encoder to an attention plan, and saving / loading the result.

    from transformers import AutoModel
    import attnreuse.hf as arhf
    model = AutoModel.from_pretrained("path/to/all-MiniLM-L6-v2")
    fast = arhf.convert(model, "mha,mha,share,mha,share,mha")
    arhf.save(fast, "runs/minilm-share")          # safetensors + config.json recording the plan
    again = arhf.load("runs/minilm-share")

The converted model keeps the host's call signature and outputs; its config records the plan
(`attnreuse_plan`) and runs attention through the registered "attnreuse" implementation.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

from torch import nn

from attnreuse._io import new_file_mode
from attnreuse._rundir import staged_output
from attnreuse.hf import interface
from attnreuse.hf.disentangled import add_disentangled_term
from attnreuse.hf.hosts import host_for, modeling_class
from attnreuse.hf.modules import PlanAttention, PlanState, rotate_queries_and_keys
from attnreuse.plan import get_kind, map_sources, parse_plan

__all__ = ["PLAN_KEY", "check_replaceable", "convert", "load", "plan_of", "save"]

PLAN_KEY = "attnreuse_plan"
WEIGHTS = "model.safetensors"


def plan_of(model: nn.Module) -> list[str] | None:
    """The plan a converted model runs (one entry per layer), or None for a plain model."""
    return getattr(model.config, PLAN_KEY, None)


def convert(model: nn.Module, plan: object, *, inplace: bool = False) -> nn.Module:
    """A copy of `model` (a loaded `transformers` encoder) whose layers follow `plan`.

    plan: one kind for every layer, or one per layer (sequence or comma-separated string); kinds
    as `attnreuse.plan`. New parts start from the dense weights (`Kind.retrofit`); "skip" layers'
    Phi starts untrained (fit it with `attnreuse.hf.fit` or distillation).
    """
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    if not hasattr(config, "num_attention_heads"):  # a composite (CLIPModel: text and vision towers) or no encoder
        host_for(config)  # names the supported model types when this one is not among them
        raise TypeError(f"a {type(model).__name__} config has no num_attention_heads: convert its encoder")
    if plan_of(model) is not None:
        raise ValueError(f"model already follows plan {plan_of(model)}; convert the original model")
    host = host_for(config)
    host.check_model(model)
    found = host.attention_modules(model)
    if len(found) != config.num_hidden_layers:
        raise ValueError(f"found {len(found)} attention modules in a {config.num_hidden_layers}-layer {host.family} model")
    specs = parse_plan(plan, len(found), config.num_attention_heads, owner=f"the {config.model_type} model")
    model = model if inplace else copy.deepcopy(model)
    found = host.attention_modules(model)
    sources = map_sources(specs)
    emit = {s for s in sources if s is not None}
    state = PlanState()
    rotary = host.rotary_kwarg(config)
    for i, ((parent, attr, module), spec) in enumerate(zip(found, specs)):
        source = host.source(module, config.num_attention_heads)
        core = get_kind(spec.kind).retrofit(spec, source)
        if rotary is not None:
            rotate_queries_and_keys(core, source.head_dim, state, host.rotary_on)
        core.to(device=host.weight(module).device, dtype=host.weight(module).dtype)
        if host.relative:
            add_disentangled_term(core, module, state)
        out_proj = getattr(module, host.out_proj) if host.out_proj else None
        layer = PlanAttention(core, spec, i, sources[i], i in emit, state, out_proj, host.score_bias, rotary,
                              host.mask_is_score_bias)
        setattr(parent, attr, layer.train(module.training))  # the mode of the layer it replaces (dropout)
    setattr(model.config, PLAN_KEY, [str(s) for s in specs])
    model.config._attn_implementation = interface.register()
    return model


def check_replaceable(directory: str | os.PathLike, what: str = "") -> None:
    """Raise FileExistsError unless an existing `directory` may be replaced by a converted model:
    it is empty or holds one (its config.json records a plan). Replacing removes the whole
    directory, so a directory of anything else (a model, a run, a user's files) is never deleted;
    `what` names it in the message (a flag such as "--output ")."""
    target = Path(directory)
    if not target.is_dir() or not any(target.iterdir()):
        return
    try:
        converted = PLAN_KEY in json.loads((target / "config.json").read_text())
    except (OSError, ValueError, TypeError):  # no config.json, not JSON, or not a JSON object
        converted = False
    names = sorted(p.name for p in target.iterdir())
    if not converted:
        raise FileExistsError(f"{what}{target} holds {_listed(names)}, not a converted model; replacing it would "
                              "delete them: choose another directory")
    # a converted model beside other things (a user's notes, a distillation run under it): never deleted with it
    others = [n for n in names if not (_MODEL_FILE.fullmatch(n) and (target / n).is_file())]
    if others:
        raise FileExistsError(f"{what}{target} holds {_listed(others)} beside a converted model; replacing it would "
                              "delete them: move them out or choose another directory")


# What `save` writes into a converted model's directory: config.json, the weights, convert.json
# (`hf convert`'s record), and the tokenizer's or feature extractor's files.
_MODEL_FILE = re.compile(r"config\.json|model\.safetensors|convert\.json|generation_config\.json|preprocessor_config\.json"
                         r"|special_tokens_map\.json|added_tokens\.json|tokenizer(_config)?\.json|vocab\.(txt|json)"
                         r"|merges\.txt|[\w.-]*\.model|chat_template\.jinja")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def save(model: nn.Module, directory: str | os.PathLike, *, tokenizer=None, overwrite: bool = False) -> Path:
    """Write a converted model to `directory`: config.json (with the plan) and model.safetensors,
    plus the tokenizer when given. Staged beside `directory` and renamed (`staged_output`), so a
    crash leaves nothing half-written and a concurrent save of the same directory is refused; an
    existing directory is replaced only with `overwrite=True`, and only when it holds a converted
    model or nothing (`check_replaceable`)."""
    if plan_of(model) is None:
        raise ValueError("save() takes a converted model (attnreuse.hf.convert); save a plain model with save_pretrained")

    def check(target: Path) -> None:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True (--force) to replace it")
        check_replaceable(target)

    with staged_output(directory, flag="directory", check=check) as staging:
        write_converted(model, staging, tokenizer=tokenizer)
    return Path(directory)


def write_converted(model: nn.Module, directory: Path, *, tokenizer=None) -> None:
    """Write a converted model's files into the existing, empty `directory` (`save` stages them)."""
    from safetensors.torch import save_file

    model.config.architectures = [type(model).__name__]  # load() rebuilds this class (as save_pretrained records it)
    model.config.save_pretrained(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt", PLAN_KEY: json.dumps(plan_of(model))})
    os.chmod(directory / WEIGHTS, new_file_mode())  # save_file makes it 0600; it reads like the other files
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def load(directory: str | os.PathLike) -> nn.Module:
    """A converted model saved by `save` (or a plain `transformers` directory, converted to nothing)."""
    import transformers
    from safetensors.torch import load_file

    from attnreuse.hf.source import load_config

    directory = Path(directory)
    config = load_config(directory)
    plan = getattr(config, PLAN_KEY, None)
    if plan is None:
        raise ValueError(f"{directory} holds no attnreuse plan ({PLAN_KEY} missing from config.json): not a converted "
                         f"model; make one with `attnreuse hf convert --model {directory} --plan ...`, or load it with "
                         "transformers")
    interface.register()
    config._attn_implementation = host_for(config).attn_implementation  # what the model is built on; convert replaces it
    arch = (getattr(config, "architectures", None) or ["AutoModel"])[0]
    cls = modeling_class(config.model_type, arch) or transformers.AutoModel
    delattr(config, PLAN_KEY)
    base = cls.from_config(config) if cls is transformers.AutoModel else cls(config)
    model = convert(base, plan, inplace=True)
    weights = directory / WEIGHTS
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # the same names in other sizes: config.json's plan was edited, or the weights swapped
        sizes = [line.strip() for line in str(err).splitlines() if line.strip().startswith("size mismatch")]
        raise ValueError(f"{weights} does not fit plan {plan} in its config.json: "
                         f"{sizes[0] if sizes else str(err).splitlines()[0]}") from None
    if missing and all(k.startswith("pooler.") for k in missing) and getattr(model, "pooler", None) is not None:
        model.pooler, missing = None, []  # saved from a model built without its pooling layer
    if missing or unexpected:
        raise ValueError(f"{weights} does not match plan {plan}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
