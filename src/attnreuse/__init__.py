"""attnreuse: vision transformers that reuse attention.

Importing the package registers the attnreuse models with timm; it starts no threads, prints
nothing and loads no optional dependency (ONNX, matplotlib, scikit-learn are imported by the tools
that need them).
"""

from attnreuse import layers, models, ops
from attnreuse.models import create_model

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "layers", "models", "ops"]
