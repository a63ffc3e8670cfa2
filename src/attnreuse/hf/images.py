"""Image data for the vision hosts in the hf jobs (ViT, DeiT, DINOv2, I-JEPA, ViT-MSN encoders and
CLIP's and SigLIP's image towers).

- `ImageBatcher`: batches images through the model directory's own `transformers` image processor
  (its preprocessor_config.json: resize, crop, rescale, normalise), else a `ViTImageProcessor` at
  the config's image_size (mean and std 0.5, that processor's defaults), behind a tokenizer's call
  signature, so the jobs batch text, audio and images alike. Every image makes the same tokens
  (`image_tokens`), so a batch needs no mask: `{"pixel_values": [B, 3, S, S]}`.
- The data: the built-in "digits" (scikit-learn's 1797 8x8 handwritten digits, as greyscale
  images the processor upsamples; what installs offline, enough to compare a plan with the
  original on real images but far from the photographs the released models saw), or a directory
  of images (`--data DIR`: every .png / .jpg / .jpeg / .bmp / .webp / .gif below it, in path
  order, each decoded once before any work so that a damaged file is named up front: a run that
  met it later could not resume without it, as the data would have changed). Held out: every tenth.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

__all__ = ["BUILTIN", "IMAGE_SUFFIXES", "ImageBatcher", "image_hw", "image_tokens", "load_image_batcher", "load_images",
           "split_images"]

BUILTIN = "digits"
HELD_OUT_EVERY = 10
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
# Tokens before the patches where they are not one class token: none (I-JEPA, SigLIP), a class and a
# distillation token (DeiT); DINOv2-with-registers adds its `num_register_tokens` to its class token.
_PREFIX_TOKENS = {"ijepa": 0, "siglip_vision_model": 0, "deit": 2}


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def image_hw(config) -> tuple[int, int]:
    """(height, width) of the images an encoder of `config` takes (its image_size)."""
    return _pair(config.image_size)


def image_tokens(config) -> int:
    """Tokens the encoder of `config` runs on for one image: its patches, a class token, registers."""
    (h, w), (ph, pw) = image_hw(config), _pair(config.patch_size)
    patches = (h // ph) * (w // pw)
    prefix = _PREFIX_TOKENS.get(config.model_type, 1)
    return patches + prefix + int(getattr(config, "num_register_tokens", 0) or 0)


@contextmanager
def _opened(path):
    """PIL's image at `path`, read lazily; a file that is none, or whose data breaks off, is named."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            yield im
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({str(err).splitlines()[0]})") from None


def _to_rgb(item):
    """An image item (a path, a PIL image, or an [H, W] / [H, W, 3] uint8 array) -> a PIL RGB image."""
    import numpy as np
    from PIL import Image

    if isinstance(item, (str, Path)):
        with _opened(item) as im:
            return im.convert("RGB")
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    return Image.fromarray(np.asarray(item, dtype=np.uint8)).convert("RGB")


class ImageBatcher:
    """Images (paths, PIL images, uint8 arrays) -> {"pixel_values": [B, 3, S, S]} for a model of
    `config`, through `processor` (a `transformers` image processor)."""

    def __init__(self, config, processor=None) -> None:
        from transformers import ViTImageProcessor

        self.config = config
        h, w = image_hw(config)
        self.processor = processor or ViTImageProcessor(size={"height": h, "width": w})

    def __call__(self, images, padding=True, truncation=False, max_length: int | None = None, return_tensors="pt") -> dict:
        out = self.processor(images=[_to_rgb(i) for i in images], return_tensors="pt")
        pixels = out["pixel_values"]
        size = image_hw(self.config)
        if tuple(pixels.shape[-2:]) != size:
            raise ValueError(f"the image processor makes {pixels.shape[-2]} x {pixels.shape[-1]} images; the model "
                             f"takes {size[0]} x {size[1]} (image_size in its config.json)")
        return {"pixel_values": pixels}

    def frames(self, images, max_length: int | None = None) -> list[int]:
        """Tokens per image (all alike): what `length_buckets` sorts by."""
        return [image_tokens(self.config)] * len(images)

    def save_pretrained(self, directory) -> None:
        """Writes the processor's preprocessor_config.json (what `transformers` loads back)."""
        self.processor.save_pretrained(directory)


def load_image_batcher(directory, config) -> ImageBatcher:
    """The batcher of a model directory: its saved image processor, else the default one."""
    from transformers import AutoImageProcessor

    if (Path(directory) / "preprocessor_config.json").is_file():
        try:
            return ImageBatcher(config, AutoImageProcessor.from_pretrained(directory, local_files_only=True))
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{directory}: its preprocessor_config.json cannot be read ({str(err).splitlines()[0]})") from None
    return ImageBatcher(config)


def load_images(data: str) -> list:
    """The images of `data`: "digits" (built in: [8, 8] uint8 arrays) or a directory (paths)."""
    if data == BUILTIN:
        from sklearn.datasets import load_digits

        return [(img * (255 / 16)).round().astype("uint8") for img in load_digits().images]
    path = Path(data)
    if not path.is_dir():
        raise ValueError(f"--data {data!r}: a vision model reads images: give '{BUILTIN}' (built in) or a directory "
                         f"of images ({', '.join(IMAGE_SUFFIXES)})")
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise ValueError(f"--data {data}: no images below it ({', '.join(IMAGE_SUFFIXES)})")
    for p in found:  # each decoded once now: a file that is no image, or whose data breaks off, is named before any work
        with _opened(p) as im:
            im.draft(im.mode, (64, 64))  # a JPEG decodes at a fraction of its size (every scan still read)
            im.load()
    return found


def split_images(images: list) -> tuple[list, list]:
    """(train, held-out): every tenth image is held out."""
    held = [x for i, x in enumerate(images) if i % HELD_OUT_EVERY == 0]
    train = [x for i, x in enumerate(images) if i % HELD_OUT_EVERY != 0]
    return train, held
