"""Run directories: the crash-safe checkpoints `attnreuse train` and `attnreuse convert` write, and
the one place that reads them back (every tool that takes a run directory goes through here).

A run directory holds:
  config.json                    the TrainConfig (train) or ConvertConfig (convert)
  model.json                     {"name": ..., "kwargs": {...}}: `create_model(name, **kwargs)` rebuilds it
  checkpoints/epoch_NNNN/        model.safetensors, ema.safetensors (optional), state.pt
                                 (optimizer, scheduler, RNG states of every rank, epoch, step)
  checkpoint.json                {"epoch": E, "path": "checkpoints/epoch_NNNN"}: the last complete one
  metrics.jsonl, summary.json    (train only)

Every file is written atomically; a new epoch directory is complete before `checkpoint.json` is
switched to it, and older epoch directories are removed only afterwards, so a crash at any point
leaves the last good checkpoint loadable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

from attnreuse._io import atomic_path, atomic_write_json, new_file_mode, read_json
from attnreuse.models import create_model

__all__ = [
    "latest_checkpoint",
    "load_into",
    "load_model",
    "load_model_dir",
    "load_state",
    "load_weights",
    "read_model_spec",
    "save_checkpoint",
    "save_model_weights",
    "state_dict_mismatch",
    "write_model_spec",
]

POINTER = "checkpoint.json"
MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"
STATE = "state.pt"


def save_model_weights(path: str | Path, state_dict: dict, metadata: dict | None = None) -> Path:
    """Write a state dict as safetensors, atomically (tensors are copied to contiguous CPU memory)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.chmod(tmp, new_file_mode())  # save_file recreates the file 0600; a run's files read alike
    return Path(path)


def save_checkpoint(
    run_dir: str | Path, epoch: int, model_sd: dict, ema_sd: dict | None, state: dict
) -> Path:
    """Write checkpoints/epoch_{epoch:04d}/ and then point `checkpoint.json` at it; prune older ones."""
    run_dir = Path(run_dir)
    rel = Path("checkpoints") / f"epoch_{epoch:04d}"
    ckpt = run_dir / rel
    ckpt.mkdir(parents=True, exist_ok=True)
    save_model_weights(ckpt / WEIGHTS, model_sd, {"epoch": epoch})
    if ema_sd is not None:
        save_model_weights(ckpt / EMA_WEIGHTS, ema_sd, {"epoch": epoch})
    with atomic_path(ckpt / STATE) as tmp:
        torch.save(state, tmp)
    atomic_write_json(run_dir / POINTER, {"epoch": epoch, "path": rel.as_posix()})
    for old in (run_dir / "checkpoints").iterdir():
        if old.is_dir() and old.name != rel.name:
            shutil.rmtree(old, ignore_errors=True)
    return ckpt


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The directory `checkpoint.json` points at, or None when the run has no checkpoint yet."""
    pointer = Path(run_dir) / POINTER
    if not pointer.is_file():
        return None
    ckpt = Path(run_dir) / read_json(pointer, ("path",))["path"]
    if not (ckpt / WEIGHTS).is_file():
        raise FileNotFoundError(f"{pointer} points at {ckpt}, which holds no {WEIGHTS}")
    return ckpt


def load_state(ckpt: str | Path) -> dict:
    """The optimizer/scheduler/RNG state saved beside a checkpoint's weights."""
    return torch.load(Path(ckpt) / STATE, map_location="cpu", weights_only=True)


def load_weights(path: str | Path, *, ema: bool = False) -> dict:
    """A state dict from a .safetensors file, a checkpoint directory or a run directory.

    With `ema`, a checkpoint's EMA weights are returned instead (error if it kept none).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"checkpoint file must be .safetensors, got {path}")
        return _read_safetensors(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is neither a .safetensors file nor a directory")
    ckpt = latest_checkpoint(path) if (path / POINTER).is_file() else path
    name = EMA_WEIGHTS if ema else WEIGHTS
    if not (ckpt / name).is_file():
        raise FileNotFoundError(f"no {name} in {ckpt}")
    return _read_safetensors(ckpt / name)


def _read_safetensors(path: Path) -> dict:
    """A .safetensors file as a state dict; a truncated, empty or foreign file is a ValueError
    naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type, OSError on some truncations
        raise ValueError(f"{path} is not a readable .safetensors file ({err}); re-save or re-download it") from None


def state_dict_mismatch(err: RuntimeError) -> str:
    """`load_state_dict`'s error as one line: its first kind of mismatch (at most four keys named)
    and how many more lines of mismatches it listed."""
    lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
    if not lines:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    what, _, keys = lines[0].partition(": ")  # 'Missing key(s) in state_dict: "a", "b", ...'
    names = keys.split(", ")
    listed = what.endswith("in state_dict") and len(names) > 4  # not 'size mismatch for x: ... Size([1, 1, 128])'
    first = f"{what}: {', '.join(names[:4])} and {len(names) - 4} more" if listed else lines[0]
    more = len(lines) - 1
    return first + (f"; {more} more mismatch{'es' if more > 1 else ''}" if more else "")


def load_into(model: nn.Module, state_dict: dict, source: str | Path) -> nn.Module:
    """`model.load_state_dict(state_dict)` (strict); a checkpoint of another shape or plan is a
    one-line ValueError naming `source` and the first mismatch."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {source} does not fit the model ({state_dict_mismatch(err)}); "
            "give the --model/--model-kwargs it was trained with"
        ) from None
    return model


def read_model_spec(run_dir: str | Path, *, required: bool = False) -> dict | None:
    """{"name", "kwargs"} of a train/convert output directory (its model.json); None when `run_dir`
    holds none, or a FileNotFoundError saying so with `required`."""
    spec_path = Path(run_dir) / MODEL_JSON
    if not spec_path.is_file():
        if required:
            raise FileNotFoundError(
                f"{run_dir} is not an `attnreuse train`/`convert` output directory (no {MODEL_JSON})"
            )
        return None
    spec = read_json(spec_path, ("name", "kwargs"))
    if not isinstance(spec["name"], str) or not isinstance(spec["kwargs"], dict):
        raise ValueError(f"{spec_path} must hold a model name and a kwargs object; it is damaged or another tool's file")
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])}


def write_model_spec(run_dir: str | Path, spec: dict) -> None:
    """Write model.json ({"name", "kwargs"}: `create_model(name, **kwargs)` rebuilds the model)."""
    atomic_write_json(Path(run_dir) / MODEL_JSON, {"name": spec["name"], "kwargs": dict(spec["kwargs"])})


def load_model_dir(run_dir: str | Path, *, ema: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild the model a train/convert run directory describes and load its latest weights.

    Returns (model in eval mode, {"name", "kwargs"}).
    """
    spec = read_model_spec(run_dir, required=True)
    model = create_model(spec["name"], **spec["kwargs"])
    load_into(model, load_weights(run_dir, ema=ema), run_dir)
    return model.eval(), spec


def load_model(
    name: str | None, kwargs: dict, checkpoint: str | Path | None, *, what: str = "checkpoint",
    kwargs_flag: str = "--model-kwargs",
) -> tuple[nn.Module, dict]:
    """(model in eval mode, {"name", "kwargs"}) from a run directory `checkpoint` (whose model.json
    names the model and its arguments: `name`, when given, must agree, and `kwargs`, which it would
    override, must be empty), or from `name` + `kwargs` with the weights of `checkpoint` (a
    .safetensors file, checkpoint or run directory; None: random weights). `kwargs_flag` is the
    flag that gave `kwargs`, for the error."""
    if checkpoint is not None and not Path(checkpoint).exists():
        raise FileNotFoundError(f"{what} {checkpoint}: no such file or directory")
    spec = read_model_spec(checkpoint) if checkpoint is not None else None
    if spec is not None:
        if name is not None and name != spec["name"]:
            raise ValueError(f"model {name!r} differs from the {what}'s model {spec['name']!r}")
        if kwargs:
            raise ValueError(f"{kwargs_flag} apply to a .safetensors {what}; the run {checkpoint} reads its own from "
                             f"{MODEL_JSON}: drop {kwargs_flag}")
        return load_model_dir(checkpoint)
    if name is None:
        raise ValueError(f"{what} {checkpoint} is not a train/convert output directory: give the model name too")
    model = create_model(name, **kwargs)
    if checkpoint is not None:
        load_into(model, load_weights(checkpoint), checkpoint)
    return model.eval(), {"name": name, "kwargs": dict(kwargs)}
