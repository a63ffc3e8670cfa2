"""Fixtures of the hf tests: a saved tiny BERT directory, a saved tiny WhisperModel directory and a text file."""

from __future__ import annotations

import pytest

from hfutil import sentences, tiny_config, tiny_model, tiny_tokenizer


@pytest.fixture
def model_dir(tmp_path):
    """A saved tiny BERT with its tokenizer: a local transformers directory as a user would have."""
    directory = tmp_path / "tiny-bert"
    tiny_model("bert").save_pretrained(directory)
    tiny_tokenizer(tmp_path).save_pretrained(directory)
    return directory


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(sentences(160)) + "\n")
    return path


@pytest.fixture
def whisper_dir(tmp_path):
    """A saved tiny WhisperModel (encoder and decoder, as released checkpoints are), no preprocessor config."""
    import torch
    import transformers

    torch.manual_seed(0)
    directory = tmp_path / "tiny-whisper"
    transformers.WhisperModel(tiny_config("whisper")).eval().save_pretrained(directory)
    return directory
