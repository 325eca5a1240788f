"""Where the model looked: ACC attention maps over the image (issue 19).

For each image, the ACC attention of every visual token to the book of one attribute (by default the predicted one),
laid out on the backbone's visual-token grid (``backbone.token_grid``: ``grid x grid`` for the compact GPTv, the
processor's patch grid over the merge size for Qwen2-VL), normalised to sum to one over the image and upsampled to the
input resolution. :func:`save_attention_maps` draws them over the images with the attribute's clinical name;
:class:`~attok_monai.handlers.AttentionMapSampleHandler` writes a sheet for a fixed sample of the validation part at
each validation (it lands in the run folder, which the bundle logs to MLflow).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from attok_monai.fileio import atomic_write

__all__ = ["attention_maps", "save_attention_maps"]


@torch.no_grad()
def attention_maps(
    network: Any, images: torch.Tensor, attributes: Sequence[int] | torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """ACC attention maps at the input resolution.

    Args:
        network: an :class:`~attok_monai.networks.nets.AttTokGPTv` with ACC.
        images: (B, C, H, W) in [0, 1].
        attributes: (B,) attribute index per image; ``None`` = the most probable attribute by book retrieval
            (:meth:`retrieval_scores`, one forward of the vision side), or, for ACC without attribute tokens (no
            trained a_k to retrieve), the book the visual tokens attend to most.

    Returns:
        ``(maps (B, H, W) float, each summing to 1; attributes (B,) long)``.
    """
    attn = network.acc_attention(images)  # (B, N_v, K)
    if attributes is None:
        scores = network.retrieval_scores(images) if network.use_attribute_tokens else attn.sum(1)
        attributes = scores.argmax(-1)
    attributes = torch.as_tensor(attributes, dtype=torch.long, device=attn.device).view(-1)
    per_token = attn.gather(2, attributes.view(-1, 1, 1).expand(-1, attn.shape[1], 1)).squeeze(-1)  # (B, N_v)
    grids = network.backbone.token_grid(images)
    h, w = images.shape[-2:]
    maps = []
    for i, (gh, gw) in enumerate(grids):
        m = per_token[i, : gh * gw].reshape(1, 1, gh, gw).float()
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(min=0)
        maps.append(m / m.sum().clamp(min=1e-12))
    return torch.stack(maps), attributes.cpu()


def save_attention_maps(
    images: torch.Tensor, maps: torch.Tensor, titles: Sequence[str], path: str | os.PathLike, columns: int = 4
) -> None:
    """One PNG: each image (grey or RGB) with its map as a translucent heat map and its title (e.g. the attribute's
    clinical name). ``images`` (B, C, H, W) in [0, 1]; ``maps`` (B, H, W)."""
    import matplotlib

    matplotlib.use("Agg")
    import textwrap

    import matplotlib.pyplot as plt

    b = images.shape[0]
    cols = max(1, min(columns, b))
    rows = (b + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(b):
        img = images[i].detach().float().cpu().clamp(0, 1)
        img = img[0].numpy() if img.shape[0] == 1 else img[:3].permute(1, 2, 0).numpy()
        ax = axes.ravel()[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        m = maps[i].detach().float().cpu().numpy()
        ax.imshow(m / max(float(m.max()), 1e-12), cmap="jet", alpha=0.45, interpolation="bilinear")
        ax.set_title("\n".join(textwrap.fill(line, 34) for line in str(titles[i]).split("\n")), fontsize=7)
    fig.suptitle("ACC attention to the attribute's book (red = most)", fontsize=8)
    fig.tight_layout(h_pad=2.0, rect=(0, 0, 1, 0.97))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
