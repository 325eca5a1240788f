"""AttTok building blocks: pure torch, importable into any MONAI pipeline."""

from .acc import ACCAdapter
from .embedding_book import EmbeddingBook

__all__ = ["ACCAdapter", "EmbeddingBook"]
