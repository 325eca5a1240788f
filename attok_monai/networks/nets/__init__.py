"""GPTv networks: the compact backbone (CPU default) and the AttTok wrapper."""

from .attok_config import AttTokConfig
from .attok_gptv import AttTokGPTv, AttTokOutput
from .attribute_classifier import AttributeClassifier
from .compact_gptv import COMPACT_VISION_PREFIX, CompactGPTvBackbone, VisionEncoder2D, build_word_tokenizer
from .hf_qwen2vl import Qwen2VLBackbone

__all__ = [
    "AttTokConfig", "AttTokGPTv", "AttTokOutput", "AttributeClassifier", "COMPACT_VISION_PREFIX", "CompactGPTvBackbone",
    "Qwen2VLBackbone", "VisionEncoder2D", "build_word_tokenizer",
]
