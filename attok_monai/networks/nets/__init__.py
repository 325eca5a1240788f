"""GPTv networks: the compact backbone (CPU default) and the AttTok wrapper."""

from .attok_config import AttTokConfig
from .attok_gptv import AttTokGPTv, AttTokOutput
from .attribute_classifier import AttributeClassifier
from .compact_gptv import (
    COMPACT_FROZEN_PARTS,
    COMPACT_LLM_BODY_PREFIXES,
    COMPACT_VISION_PREFIX,
    CompactGPTvBackbone,
    VisionEncoder2D,
    build_word_tokenizer,
    compact_lr_scales,
)
from .hf_qwen2vl import Qwen2VLBackbone

__all__ = [
    "AttTokConfig", "AttTokGPTv", "AttTokOutput", "AttributeClassifier", "COMPACT_FROZEN_PARTS",
    "COMPACT_LLM_BODY_PREFIXES",
    "COMPACT_VISION_PREFIX", "CompactGPTvBackbone", "Qwen2VLBackbone", "VisionEncoder2D", "build_word_tokenizer",
    "compact_lr_scales",
]
