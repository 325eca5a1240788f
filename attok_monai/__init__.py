"""attok-monai: AttTok attribute tokens for generative vision-language models, as MONAI components.

Sub-packages: ``attributes`` (vocabulary), ``networks.blocks`` (EmbeddingBook, ACCAdapter), ``losses`` (ACMLoss,
AttTokLoss), ``networks.nets`` (compact GPTv, AttTokGPTv), ``data``, ``engines``, ``handlers``, ``bundle``.
"""

__version__ = "0.1.0"
