"""Measure the diagnosed causes of issue #21 on a bundle's model, at initialisation or after training.

On the first ``--batches`` training batches (the bundle's own loader, augmentation and questions), without optimizer
steps (the prototypes are updated as in training, eq. 5):

- gradient norms of NTP and of ``lambda * ACM`` over all parameters, for each ``acm_weighting`` (the scale factors
  of :class:`~attok_monai.losses.AttTokLoss` applied to the same two gradients) and the share of the ACM term in the
  summed gradient; the cosine of the two gradients over the parameters both reach, overall and on the vision encoder
  (``grad_cos_ntp_acm``, ``grad_cos_ntp_acm_vision``: below 0 ACM pulls against the class decision's NTP);
- the part of NTP's gradient that reaches the vision encoder (``backbone.vision``), before and after the training
  step's gradient clipping, and how far the batches agree on its direction (``vision_grad_coherence``): whether the
  attribute tokens' answers drive the encoder harder than the plain text's;
- ACM's projection theta: ``|b|``, mean ``|W x|`` over the book's a_k and e_k, mean pairwise cosine of theta(a_k)
  (off the diagonal) against that of the a_k themselves;
- the book: mean pairwise cosine of the visual prototypes and their norm against ``|a_k|`` and ``|e_k|``;
- ACC: mean pairwise cosine, across the images of a batch, of the vector ACC adds (mean over visual tokens), and its
  norm against the visual tokens' norm; the share of ACC's attention on each kind of book token (a_k, e_k, visual
  prototype; averaged over heads, visual tokens and images); the spread of its attention logits over the book tokens
  and across images (``acc_logit_spread``: 0 over the book is uniform attention, 0 across images the same scores for
  every image);
- f^a: mean pairwise cosine of the per-class means of f^a (how far apart ACM's input is by class);
- with one ``--checkpoint``: Adam's state by part of the model (``adam_by_part``: mean ``sqrt(v)`` and update size),
  to see whether ACM's gradients on the parts it shares with NTP shrink NTP's steps there.

With ``--val`` (a trained model or a ``--checkpoint``), on the bundle's validation split, without any update: the
accuracy of the class decision (argmax of the class probabilities, as the evaluator's ``prob_accuracy``), so that every
epoch of a run can be scored; with ACC, also with ACC switched off (the raw visual tokens) and how many decisions
differ: what ACC's output contributes to the answer.

    python benchmarks/diagnose_attok.py --bundle fundus_dr --batches 8                       # at initialisation
    python benchmarks/diagnose_attok.py --bundle fundus_dr --model_dir bundles/fundus_dr/runs/<run>/model  # trained
    python benchmarks/diagnose_attok.py --bundle fundus_dr --override acm_bias=False fa_position=attribute
    python benchmarks/diagnose_attok.py --bundle fundus_dr --extra from_generalist --override generalist_dir=G \
        --model_dir bundles/fundus_dr/runs/<run>/model --val
    python benchmarks/diagnose_attok.py --bundle fundus_dr --extra from_generalist --override generalist_dir=G \
        --checkpoint bundles/fundus_dr/runs/<run>/checkpoints/checkpoint_epoch=3.pt   # one epoch of a run
    python benchmarks/diagnose_attok.py --bundle fundus_dr ... --val --batches 0 \
        --checkpoint bundles/fundus_dr/runs/<run>/checkpoints/checkpoint_epoch={10,11,12}.pt  # their weight average

(A bundle run keeps its checkpoints in ``runs/<run>/checkpoints/``; a ``bench_bundles.py`` run in
``runs/<bench run>/models/``.) With ``--val``, the split scored is the run config's validation part; a run made with
``cv_folds`` scores its held-out fold unless ``--override cv_folds=0`` asks for the official validation part.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def mean_offdiag_cos(x: torch.Tensor) -> float:
    """Mean cosine over the pairs i != j of the rows of (M, d) ``x``."""
    z = F.normalize(x.float(), dim=-1)
    c = z @ z.t()
    m = c.shape[0]
    return float((c.sum() - c.diag().sum()) / max(1, m * (m - 1)))


def grad_norm(value: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def clip_factor(total: float, clip: float | None) -> float:
    """What ``clip_grad_norm_(max_norm=clip)`` multiplies a gradient of norm ``total`` by (1 without clipping)."""
    return min(1.0, clip / total) if clip and total > 0 else 1.0


def vision_share(grad: torch.Tensor, in_vision: torch.Tensor, clip: float | None) -> dict[str, float]:
    """The vision encoder's part of one flat gradient ``grad`` (P,), ``in_vision`` (P,) bool marking its entries.

    ``ntp_grad_all`` and ``ntp_grad_vision`` are the norms over every trainable parameter and over the encoder's;
    ``ntp_grad_vision_clipped`` is the encoder's norm after the training step's ``clip_grad_norm_(max_norm=clip)``
    (the whole gradient scaled by ``min(1, clip / |grad|)``): what the optimizer is handed for the encoder.
    """
    total = float(grad.norm())
    vis = float(grad[in_vision].norm()) if bool(in_vision.any()) else 0.0
    return {"ntp_grad_all": total, "ntp_grad_vision": vis, "ntp_grad_vision_clipped": vis * clip_factor(total, clip)}


def gradient_coherence(grads: torch.Tensor) -> float:
    """``|sum_i g_i| / sum_i |g_i|`` over the (n, P) per-batch gradients ``grads``: 1 when every batch pushes the
    same way, about ``1 / sqrt(n)`` for independent directions. Adam's steps have a size set by its lr, not by the
    gradient's norm, so this (not the norm) is what says how far a few steps carry the parameters."""
    total = float(grads.norm(dim=1).sum())
    return float(grads.sum(0).norm()) / total if total > 0 else 0.0


def gradient_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flat gradients (P,) over the entries where both are non-zero (0.0 when there are none): below 0
    the two losses pull the parameters they share against each other (a conflict), above 0 the same way."""
    shared = (a != 0) & (b != 0)
    if not bool(shared.any()):
        return 0.0
    return float(F.cosine_similarity(a[shared].double(), b[shared].double(), dim=0))


def acc_attention_weights(net, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ACC's (B, heads, N_v, 3K) attention weights on the (B, N_v, d) visual tokens ``raw`` and the book's key padding
    mask they were computed with."""
    mask = net.book.key_padding_mask()
    _, attn = net.acc.attention(raw, net.book.tokens(), mask, return_attention=True)
    return attn, mask


def acc_attention_shares(attn: torch.Tensor) -> list[float]:
    """ACC's attention on each kind of book token, ``[a_k, e_k, prototype]`` (sums to one): the (B, heads, N_v, 3K)
    weights averaged over images, heads and visual tokens, then summed over the K attributes of each kind."""
    return attn.float().mean((0, 1, 2)).view(-1, 3).sum(0).tolist()


def acc_logit_spread(attn: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> dict[str, float]:
    """How far ACC's attention logits (the scaled dot products) are from equal, recovered from its weights.

    ``log softmax(z) = z - logsumexp(z)``: per query, the log-weights are the logits less one constant, so their
    spread is the logits' spread. From the (B, heads, N_v, 3K) weights, with the masked book tokens left out and the
    log-weights centred over the book tokens (weights that underflowed to 0 count as ``log 1e-30``):

    - ``over_book``: standard deviation over the book tokens, averaged over images, heads and visual tokens (0: the
      attention is uniform; ~1 or more: it prefers some tokens);
    - ``over_images``: standard deviation over the images of each centred logit, averaged over heads, visual tokens
      and book tokens (0: every image scores the book alike, so ACC adds the same vector to each).
    """
    logw = attn.float().clamp_min(1e-30).log()
    if key_padding_mask is not None:
        logw = logw[..., ~key_padding_mask.reshape(-1).to(torch.bool)]
    centred = logw - logw.mean(-1, keepdim=True)
    return {"over_book": float(centred.std(-1, unbiased=False).mean()),
            "over_images": float(centred.std(0, unbiased=False).mean()) if centred.shape[0] > 1 else 0.0}


@torch.no_grad()
def val_decisions(net, parser) -> dict:
    """On the validation split: the accuracy (%) of the class decision (argmax of the class probabilities, the
    evaluator's ``prob_accuracy``) and the mean negative log class probability of the true class (``true_class_nll``,
    nats: lower on a part the model has memorised than on unseen images of the same set); with ACC, also the
    decisions with the raw visual tokens (ACC's output left out) and the number of images whose decision differs."""
    from attok_monai.engines.steps import _first_attributes

    question = parser.get_parsed_content("templates").question("open")
    net.eval()
    on = off = changed = total = 0
    nll = 0.0
    for batch in parser.get_parsed_content("validate#dataloader"):
        images = batch["image"].float()
        labels = torch.tensor([a[0] for a in _first_attributes(batch)])
        raw = net.backbone.encode_images(images)
        prompts = [question] * images.shape[0]
        probs = net.class_probabilities(images, prompts, visual=net._visual_transform(raw))
        nll += float(-probs.gather(1, labels[:, None]).clamp_min(1e-12).log().sum())
        p_on = probs.argmax(-1)
        on += int((p_on == labels).sum())
        if net.acc is not None:
            p_off = net.class_probabilities(images, prompts, visual=raw).argmax(-1)
            off += int((p_off == labels).sum())
            changed += int((p_on != p_off).sum())
        total += len(labels)
    res = {"images": total, "prob_accuracy": 100 * on / max(1, total), "true_class_nll": nll / max(1, total)}
    if net.acc is not None:
        res.update(prob_accuracy_acc_off=100 * off / max(1, total), decisions_changed=changed)
    return res


def average_states(states: list[dict]) -> dict:
    """The uniform average of network state dicts with the same keys (floating tensors averaged, as a weight average
    over checkpoints of one run: SWA's average, Izmailov et al. 2018); integer and bool buffers (counters, the
    prototypes' set flags) come from the last state."""
    if not states:
        raise ValueError("average_states: no state to average")
    out = {}
    for key, last in states[-1].items():
        if torch.is_tensor(last) and last.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(last.dtype)
        else:
            out[key] = last
    return out


def model_part(name: str) -> str:
    """The part of the model a parameter belongs to, for :func:`adam_state_by_part`: ``backbone.<module>`` (vision
    encoder, projector, LLM), with the LLM's token embeddings and LM head apart, or the AttTok module (``book``,
    ``acc``, ``acm_projection``)."""
    parts = name.split(".")
    if parts[0] != "backbone" or len(parts) < 2:
        return parts[0]
    if "embed_tokens" in parts or "lm_head" in parts:
        return "backbone.embeddings_and_head"
    return ".".join(parts[:2])


@torch.no_grad()
def adam_state_by_part(params: list[tuple[str, torch.nn.Parameter]], state: dict) -> dict[str, dict[str, float]]:
    """Adam's state in a checkpoint, by :func:`model_part`: the mean ``sqrt(v)`` (the step's denominator; a second
    loss with gradients on the same parameters raises it, and so shrinks the first loss's steps) and the mean
    ``|m| / (sqrt(v) + 1e-8)`` (the update's size in units of the lr). ``params`` are (name, parameter) in the
    optimizer's order (its param groups concatenated), ``state`` the ``optimizer.state_dict()["state"]`` of the
    checkpoint (keyed by that order; a parameter that never had a gradient has no entry and is skipped)."""
    sums: dict[str, list[float]] = {}
    for i, (name, _) in enumerate(params):
        entry = state.get(i)
        if entry is None or "exp_avg_sq" not in entry:
            continue
        m, v = entry["exp_avg"].float(), entry["exp_avg_sq"].float()
        acc = sums.setdefault(model_part(name), [0.0, 0.0, 0])
        acc[0] += float(v.sqrt().sum())
        acc[1] += float((m.abs() / (v.sqrt() + 1e-8)).sum())
        acc[2] += m.numel()
    return {k: {"sqrt_v": a / n, "update_over_lr": b / n} for k, (a, b, n) in sorted(sums.items())}


def load_checkpoint(net: torch.nn.Module, paths: str | list[str]) -> list:
    """Load the network of a training checkpoint (the bundles' ``CheckpointSaver`` file, ``{"network": state, ...}``,
    or a bare state dict) into ``net``, built from the same config; every key must match. Several paths (epochs of one
    run) load their :func:`average_states`. Returns the files as loaded (each read once), for their other entries."""
    from attok_monai.bundle.runs import network_entry

    paths = [paths] if isinstance(paths, str) else list(paths)
    files = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    net.load_state_dict(average_states([network_entry(f) for f in files]), strict=True)
    return files


def diagnose(bundle: str, overrides: dict, model_dir: str | None, batches: int, lam: float,
             extras: tuple[str, ...] = (), val: bool = False, checkpoint: str | list[str] | None = None) -> dict:
    from attok_monai.configs import read_config
    from attok_monai.engines.steps import _first_attributes
    from attok_monai.losses import AttTokLoss
    from attok_monai.networks.nets import COMPACT_VISION_PREFIX, AttTokGPTv

    configs = REPO / "bundles" / bundle / "configs"
    parser = read_config([configs / f"{name}.json" for name in ("train", *extras)])  # shared %macros pulled in
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), "download": False, **overrides})
    torch.manual_seed(int(parser["seed"]))
    net = AttTokGPTv.from_pretrained(model_dir).train() if model_dir else parser.get_parsed_content("network_def")
    adam = None
    if checkpoint:  # a run's state at the end of one epoch, or the average of several (--checkpoints_kept N keeps N)
        files = load_checkpoint(net, checkpoint)
        if len(files) == 1 and isinstance(files[0], dict) and "optimizer" in files[0]:
            # the optimizer as the bundle built it (@network is this net), in its order
            names = {id(p): n for n, p in net.named_parameters()}
            order = [(names[id(p)], p) for g in parser.get_parsed_content("optimizer").param_groups for p in g["params"]]
            adam = adam_state_by_part(order, files[0]["optimizer"]["state"])
    # before the training batches below move the prototypes
    val_result = val_decisions(net, parser) if val else None
    net.train()
    loader = parser.get_parsed_content("train#dataloader")
    clip = parser.get_parsed_content("train#trainer#iteration_update").grad_clip  # the step training clips with
    named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    # which entries of the flat gradient belong to the vision encoder (the part vision_lr_scale scales)
    in_vision = torch.cat([torch.full((p.numel(),), name.startswith(COMPACT_VISION_PREFIX)) for name, p in named])
    rows: list[dict] = []
    fa_by_class: dict[int, list[torch.Tensor]] = {}
    acc_cos, acc_ratio, acc_share, acc_spread = [], [], [], []
    vision_grads: list[torch.Tensor] = []  # the encoder's part of NTP's gradient, per batch, as the step clips it
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        images = batch["image"].float()
        attributes = _first_attributes(batch)
        out = net(images, batch["question"], batch.get("answer", [None] * len(attributes)), attributes)
        loss = AttTokLoss(lambda_weight=lam)
        ntp = loss.ntp(out.logits, out.labels)
        g_ntp = grad_norm(ntp, params)
        row = {"ntp": float(ntp.detach()), **vision_share(g_ntp, in_vision, clip)}
        if bool(in_vision.any()):
            vision_grads.append(g_ntp[in_vision] * clip_factor(row["ntp_grad_all"], clip))
        valid = out.labels[:, 1:] != -100
        t, s, n = int(valid.sum()), int(valid.any(1).sum()), int(out.f_a.shape[0])
        row.update(answer_tokens_per_answer=t / max(1, s))
        if net.acm_projection is not None and n:
            z_a, z_book = net.acm_inputs(out.f_a)
            acm = loss.acm(z_a, out.attr_targets, z_book, net.book.key_padding_mask())
            g_acm = lam * grad_norm(acm, params)
            row["acm"] = float(acm.detach())
            row["grad_cos_ntp_acm"] = gradient_cosine(g_ntp, g_acm)  # > 0: ACM helps NTP's step, < 0: conflict
            if bool(in_vision.any()):
                row["grad_cos_ntp_acm_vision"] = gradient_cosine(g_ntp[in_vision], g_acm[in_vision])
            # the same two gradients under each weighting: (NTP factor, ACM factor)
            for name, (a, b) in {"mean": (1.0, 1.0), "per_token": (1.0, n / t), "ntp_sum": (t / s, 1.0)}.items():
                gn, ga = a * g_ntp, b * g_acm
                row[f"{name}_grad_ntp"] = float(gn.norm())
                row[f"{name}_grad_acm"] = float(ga.norm())
                row[f"{name}_acm_over_ntp"] = float(ga.norm() / gn.norm().clamp(min=1e-12))
                row[f"{name}_grad_total"] = float((gn + ga).norm())
        for f, k in zip(out.f_a.detach(), out.attr_targets.tolist()):
            fa_by_class.setdefault(int(k), []).append(f)
        with torch.no_grad():
            raw = out.visual_tokens
            if net.acc is not None and bool(net.book.prototype_initialized.any()):
                delta = (net._visual_transform(raw) - raw).mean(1)  # (B, d)
                acc_cos.append(mean_offdiag_cos(delta))
                acc_ratio.append(float(delta.norm(dim=-1).mean() / raw.mean(1).norm(dim=-1).mean()))
                attn, mask = acc_attention_weights(net, raw)
                acc_share.append(acc_attention_shares(attn))
                acc_spread.append(acc_logit_spread(attn, mask))
            net.book.update_prototypes(out.visual_tokens, out.visual_targets)
        rows.append(row)
    res: dict = {"bundle": bundle, "model_dir": model_dir, "checkpoint": checkpoint, "overrides": overrides,
                 "batches": len(rows), "lambda": lam}
    keys = sorted({k for r in rows for k in r})
    res["per_batch_mean"] = {k: sum(r[k] for r in rows if k in r) / max(1, sum(k in r for r in rows)) for k in keys}
    with torch.no_grad():
        a, e = net.book.attribute_embeddings.float(), net.book.keyword_embeddings.float()
        book = {"cos_a": mean_offdiag_cos(a), "cos_e": mean_offdiag_cos(e), "norm_a": float(a.norm(dim=-1).mean()),
                "norm_e": float(e.norm(dim=-1).mean())}
        protos = net.book.prototypes[net.book.prototype_initialized].float()
        if protos.shape[0] > 1:
            book.update(cos_prototypes=mean_offdiag_cos(protos), norm_prototypes=float(protos.norm(dim=-1).mean()))
        if net.acm_projection is not None:
            proj = net.acm_projection.linear
            wx = torch.cat([a, e]) @ proj.weight.float().t()
            book.update(theta_bias_norm=float(proj.bias.norm()) if proj.bias is not None else 0.0,
                        theta_wx_norm=float(wx.norm(dim=-1).mean()),
                        cos_theta_a=mean_offdiag_cos(net.acm_projection(a)),
                        cos_theta_e=mean_offdiag_cos(net.acm_projection(e)))
        if acc_cos:
            book.update(cos_acc_delta_across_images=sum(acc_cos) / len(acc_cos),
                        acc_delta_over_visual_norm=sum(acc_ratio) / len(acc_ratio),
                        acc_attention_a_e_prototype=torch.tensor(acc_share).mean(0).tolist(),
                        acc_logit_std_over_book=sum(r["over_book"] for r in acc_spread) / len(acc_spread),
                        acc_logit_std_over_images=sum(r["over_images"] for r in acc_spread) / len(acc_spread),
                        acc_logit_scale=torch.as_tensor(net.acc.logit_scale()).item())  # s; 1.0 = eq. 6
        if len(fa_by_class) > 1:
            means = torch.stack([torch.stack(v).mean(0) for _, v in sorted(fa_by_class.items())])
            book["cos_fa_class_means"] = mean_offdiag_cos(means)
    res["book"] = book
    if vision_grads:
        res["vision_grad_coherence"] = gradient_coherence(torch.stack(vision_grads))
    if val_result is not None:
        res["val"] = val_result
    if adam is not None:
        res["adam_by_part"] = adam
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="fundus_dr")
    ap.add_argument("--model_dir", default=None, help="a trained model folder (save_pretrained); default: a new model")
    ap.add_argument("--extra", nargs="*", default=[], help="config files merged over train.json (e.g. from_generalist)")
    ap.add_argument("--override", nargs="*", default=[], help="config overrides key=value")
    ap.add_argument("--checkpoint", nargs="+", default=None,
                    help="a training checkpoint (checkpoint_epoch=N.pt) of a run made with the same config, extras and "
                         "overrides: the model as it was at the end of that epoch; several: their weight average")
    ap.add_argument("--val", action="store_true",
                    help="with a trained --model_dir or a --checkpoint: validation accuracy (and with ACC, ACC on and off)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--lambda_weight", type=float, default=1.0, help="lambda for the ACM gradient (paper start: 1)")
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args()
    os.environ.setdefault("ATTOK_DATA_ROOT", str((REPO.parent / "shared" / "data").resolve()))
    overrides = {k: _value(v) for k, _, v in (o.partition("=") for o in args.override)}
    if args.checkpoint and args.model_dir:
        raise SystemExit("--checkpoint and --model_dir: give one (the checkpoint's model is built from the config)")
    res = diagnose(args.bundle, overrides, args.model_dir, args.batches, args.lambda_weight, tuple(args.extra),
                   args.val, args.checkpoint[0] if args.checkpoint and len(args.checkpoint) == 1 else args.checkpoint)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
