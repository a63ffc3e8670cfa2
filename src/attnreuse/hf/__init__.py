"""Attention plans hosted in Hugging Face `transformers` encoders (the BERT family, DistilBERT, MPNet, DeBERTa,
ModernBERT, nomic-embed, GTE, EuroBERT; ViT / DeiT / DINOv2 / BEiT and CLIP's and SigLIP's image towers;
Whisper's encoder, wav2vec2 / HuBERT / Wav2Vec2-Conformer / data2vec-audio / UniSpeech(-SAT) / SEW(-D)):
`attnreuse.hf.hosts.SUPPORTED` lists the model types.

`convert(model, plan)` retrofits a loaded encoder to a plan of attnreuse kinds; `save` / `load`
round-trip the result; `register()` adds "attnreuse" to transformers' attention registries so
`attn_implementation="attnreuse"` runs exact attention through attnreuse's kernel.
Importing this package does not import transformers; its functions do.
"""

from attnreuse.hf.convert import PLAN_KEY, convert, load, plan_of, save
from attnreuse.hf.interface import register

__all__ = ["PLAN_KEY", "convert", "load", "plan_of", "register", "save"]
