"""AttTok building blocks: pure torch, importable into any MONAI pipeline."""

from .acc import ACCAdapter
from .acm_projection import ACMProjection
from .embedding_book import EmbeddingBook

__all__ = ["ACCAdapter", "ACMProjection", "EmbeddingBook"]
