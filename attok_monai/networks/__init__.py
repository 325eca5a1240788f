"""Networks: ``blocks`` (EmbeddingBook, ACCAdapter), ``nets`` (compact GPTv, AttTokGPTv) and ``utils``."""
