"""attok-monai: AttTok attribute tokens for generative vision-language models, as MONAI components.

Sub-packages: ``attributes`` (vocabulary), ``networks.blocks`` (EmbeddingBook, ACCAdapter, ACMProjection), ``losses``
(ACMLoss, AttTokLoss; no parameters), ``networks.nets`` (compact GPTv, AttTokGPTv, AttTokConfig), ``networks.builders``,
``optimizers`` (parameter groups, schedules), ``data``, ``engines``, ``handlers``, ``bundle``; package data under
``configs`` (augmentation fragments).
"""

__version__ = "0.1.0"
