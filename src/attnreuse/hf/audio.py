"""Waveform data for the speech hosts in the hf jobs: raw waveforms (wav2vec2, HuBERT) and log-mel
frames (Whisper's encoder).

- `WaveformBatcher`: pads clips through `transformers`' own `Wav2Vec2FeatureExtractor` (each clip
  normalised to zero mean and unit variance over its real samples, zero-padded on the right, a
  sample mask), behind a tokenizer's call signature, so the jobs batch text and audio alike.
  `max_length` counts frames, as it counts tokens for text.
- `MelBatcher`: the same for Whisper, through `transformers`' `WhisperFeatureExtractor`: every clip
  zero-padded to the encoder's fixed input, 2 x max_source_positions mel frames (10 ms each; 30 s
  for the released models), with a mel-frame mask. Whisper's encoder attends over the padding as
  it was trained to; the jobs pool, compare and distil over each clip's real frames only
  (`frame_mask`: encoder frame i is real when mel frame 2i is).
- `synthetic_clips`: the built-in corpus ("synthetic"). No speech data installs offline, so the
  jobs calibrate, distil and check fidelity on seeded synthetic voiced sound: a harmonic series on
  a gliding pitch (90-260 Hz) shaped by two formant-like peaks, a syllable-rate amplitude envelope
  (3-6 Hz), noise bursts and a noise floor, at 16 kHz; each clip 24-96 frames long (0.5-1.9 s on
  the real 320-samples-a-frame conv stack, and in Whisper's 20 ms encoder frames). Enough to exercise
  and compare the models, not a substitute for speech: fidelity on it says how closely a plan follows
  the original on these inputs only. Held out: every tenth clip.
- `samples_for_frames`, `frames_for_samples`, `frame_mask`: each encoder's length arithmetic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BUILTIN", "SAMPLE_RATE", "MelBatcher", "WaveformBatcher", "fixed_frames", "frame_mask", "frames_for_samples",
           "load_batcher", "mel_frames", "samples_for_frames", "split_clips", "synthetic_clips"]

SAMPLE_RATE = 16_000
BUILTIN = "synthetic"
HELD_OUT_EVERY = 10
MEL_HOP = 160  # Whisper's STFT hop: one mel frame per 10 ms at 16 kHz
MEL_PER_FRAME = 2  # Whisper's second conv has stride 2: two mel frames per encoder frame


def _is_mel(config) -> bool:
    """Whether `config`'s encoder reads log-mel frames (Whisper) rather than raw samples."""
    return getattr(config, "model_type", None) == "whisper"


def mel_frames(config) -> int:
    """The mel frames a Whisper encoder of `config` takes, exactly: 2 x max_source_positions."""
    return MEL_PER_FRAME * config.max_source_positions


def fixed_frames(config) -> int | None:
    """The one sequence length an encoder of `config` takes (Whisper: max_source_positions
    frames), or None when it takes any (text, raw waveforms)."""
    return config.max_source_positions if _is_mel(config) else None


def samples_for_frames(config, frames: int) -> int:
    """The fewest waveform samples the conv feature encoder of `config` maps to `frames` frames
    (each conv: out = (in - kernel) // stride + 1, inverted layer by layer from the last; Whisper:
    two 10 ms mel frames per encoder frame)."""
    if _is_mel(config):
        return frames * MEL_PER_FRAME * MEL_HOP
    samples = frames
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        samples = (samples - 1) * stride + kernel
    return samples


def frames_for_samples(config, samples: int) -> int:
    """Frames the conv feature encoder of `config` makes of `samples` samples (0 if too short;
    Whisper: of the samples' mel frames, at most the encoder's fixed input)."""
    if _is_mel(config):
        mel = min(samples // MEL_HOP, mel_frames(config))
        return -(-mel // MEL_PER_FRAME)
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        samples = max(0, (samples - kernel) // stride + 1)
    return samples


def frame_mask(model, sample_mask: Tensor, frames: int) -> Tensor:
    """[B, frames] real frames of a batch whose sample mask is `sample_mask` [B, L]: the frames the
    model's conv feature encoder makes of each clip's real samples (its own length rule). For
    Whisper the mask is over mel frames [B, 2 * frames], and encoder frame i (its second conv,
    stride 2, centred on mel frame 2i) is real when mel frame 2i is."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if _is_mel(model.config):
        return sample_mask[:, ::MEL_PER_FRAME][:, :frames]
    lengths = model._get_feat_extract_output_lengths(sample_mask.sum(-1))
    return (torch.arange(frames, device=sample_mask.device)[None] < lengths[:, None]).to(sample_mask.dtype)


class _ClipBatcher:
    """What both batchers share: `config` (the model's) and `extractor` (a `transformers` feature
    extractor); subclasses batch clips in `__call__` with a tokenizer's signature."""

    config: object
    extractor: object

    def _arrays(self, clips, truncation: bool, max_length: int | None) -> list:
        """The clips as float32 arrays, each cut to the samples of `max_length` frames when truncating."""
        limit = samples_for_frames(self.config, max_length) if truncation and max_length else None
        return [torch.as_tensor(c, dtype=torch.float32)[:limit].numpy() for c in clips]

    def frames(self, clips, max_length: int | None = None) -> list[int]:
        """Encoder frames per clip (at most `max_length` when given: the clip is truncated to it)."""
        frames = [frames_for_samples(self.config, len(c)) for c in clips]
        return [min(f, max_length) for f in frames] if max_length else frames

    def save_pretrained(self, directory) -> None:
        """Writes the feature extractor's preprocessor_config.json (what `transformers` loads back)."""
        self.extractor.save_pretrained(directory)


class WaveformBatcher(_ClipBatcher):
    """1-D float waveforms -> {"input_values": [B, L], "attention_mask": [B, L]} for a model of `config`."""

    def __init__(self, config, extractor=None) -> None:
        from transformers import Wav2Vec2FeatureExtractor

        self.config = config
        self.extractor = extractor or Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, return_attention_mask=True)

    def __call__(self, clips, padding=True, truncation=False, max_length: int | None = None, return_tensors="pt") -> dict:
        arrays = self._arrays(clips, truncation, max_length)
        out = self.extractor(arrays, sampling_rate=self.extractor.sampling_rate, padding=True, return_tensors="pt",
                             return_attention_mask=True)
        return {"input_values": out["input_values"], "attention_mask": out["attention_mask"].long()}


class MelBatcher(_ClipBatcher):
    """1-D float waveforms -> {"input_features": [B, num_mel_bins, 2 * P], "attention_mask": [B, 2 * P]}
    (a mel-frame mask) for a Whisper encoder of `config`, P = max_source_positions: every clip
    padded to the encoder's one input length."""

    def __init__(self, config, extractor=None) -> None:
        from transformers import WhisperFeatureExtractor

        self.config = config
        self.extractor = extractor or WhisperFeatureExtractor(feature_size=config.num_mel_bins,
                                                              sampling_rate=SAMPLE_RATE, hop_length=MEL_HOP)
        if self.extractor.feature_size != config.num_mel_bins or self.extractor.hop_length != MEL_HOP:
            raise ValueError(f"the feature extractor makes {self.extractor.feature_size} mel bins every "
                             f"{self.extractor.hop_length} samples; the model takes {config.num_mel_bins} every {MEL_HOP}")

    def __call__(self, clips, padding=True, truncation=False, max_length: int | None = None, return_tensors="pt") -> dict:
        arrays = self._arrays(clips, truncation, max_length)
        out = self.extractor(arrays, sampling_rate=SAMPLE_RATE, padding="max_length", truncation=True,
                             max_length=mel_frames(self.config) * MEL_HOP, return_attention_mask=True,
                             return_tensors="pt")
        return {"input_features": out["input_features"], "attention_mask": out["attention_mask"].long()}


def load_batcher(directory, config) -> WaveformBatcher | MelBatcher:
    """The batcher of a model directory: its saved feature extractor, else the default one."""
    from pathlib import Path

    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    batcher, extractor = (MelBatcher, WhisperFeatureExtractor) if _is_mel(config) else (WaveformBatcher, Wav2Vec2FeatureExtractor)
    if (Path(directory) / "preprocessor_config.json").is_file():
        try:
            return batcher(config, extractor.from_pretrained(directory, local_files_only=True))
        except (OSError, ValueError) as err:
            raise ValueError(f"{directory}: its preprocessor_config.json cannot be read ({str(err).splitlines()[0]})") from None
    return batcher(config)


def _clip(config, index: int, seed: int, min_frames: int, max_frames: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)

    def uniform(lo, hi):
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    frames = int(torch.randint(min_frames, max_frames + 1, (), generator=g))
    n = samples_for_frames(config, frames)
    t = torch.arange(n, dtype=torch.float64) / SAMPLE_RATE
    base = uniform(90, 260)
    f0 = base * (1 + uniform(-0.2, 0.2) * t / max(t[-1].item(), 1e-9))  # a pitch glide [n]
    phase = 2 * math.pi * torch.cumsum(f0 / SAMPLE_RATE, 0)
    formants = (uniform(300, 900), uniform(900, 2500))
    h = torch.arange(1, min(24, int(SAMPLE_RATE / 2 / (1.2 * base))), dtype=torch.float64)  # below Nyquist all along
    gain = sum(torch.exp(-(((h * base - f) / 150) ** 2)) for f in formants) + 0.05
    voiced = ((gain / h)[:, None] * torch.sin(h[:, None] * phase[None])).sum(0)
    envelope = 0.55 + 0.45 * torch.sin(2 * math.pi * uniform(3, 6) * t + uniform(0, 2 * math.pi))
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    burst = (torch.sin(2 * math.pi * uniform(1, 3) * t + uniform(0, 2 * math.pi)) > 0.8).double()
    wave = envelope * voiced + (0.3 * burst + 0.03) * noise
    return (wave / wave.abs().max().clamp_min(1e-9)).float()


def synthetic_clips(config, count: int = 320, *, seed: int = 0, min_frames: int = 24, max_frames: int = 96) -> list[Tensor]:
    """`count` seeded clips [samples] for a model of `config` (module docstring), each a function of (seed, index)."""
    if count < 1 or not 1 <= min_frames <= max_frames:
        raise ValueError(f"need count >= 1 and 1 <= min_frames <= max_frames, got {count}, {min_frames}, {max_frames}")
    return [_clip(config, i, seed, min_frames, max_frames) for i in range(count)]


def split_clips(clips: list) -> tuple[list, list]:
    """(train, held-out): every tenth clip is held out (a fixed split, as crc32 fixes the texts')."""
    held = [c for i, c in enumerate(clips) if i % HELD_OUT_EVERY == 0]
    train = [c for i, c in enumerate(clips) if i % HELD_OUT_EVERY != 0]
    return train, held
