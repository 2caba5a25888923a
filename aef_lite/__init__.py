"""aef-lite: a readable mini AlphaEarth Foundations (arXiv 2507.22291) for teaching and research."""

from aef_lite.config import AEFConfig
from aef_lite.data import Batch, SourceBatch
from aef_lite.model import AEFModel
from aef_lite.quantization import dequantize, quantize
from aef_lite.shipped import pretrained

__version__ = "0.1.0"

__all__ = ["AEFConfig", "AEFModel", "Batch", "SourceBatch", "dequantize", "pretrained", "quantize", "__version__"]
