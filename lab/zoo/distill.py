"""Drafts distilled from their target: the target's vision tower, a deeper language model.

A real family draft (Qwen2.5-VL-7B for 32B, LLaVA-OV-7B for 72B) shares its target's vision
encoder architecture and starting weights and differs mostly in wording. The first zoo drafts
had a tower of their own, 64 wide and one layer deep, and read half the visual anchors wrong.
Here a draft

- copies the trained target's vision tower and keeps it frozen (Qwen: patch embedding, blocks
  and the merger up to its last projection; LLaVA: the SigLIP tower), with a projector of its
  own into its narrower language model;
- has a language model of `DISTILLED_DRAFT` size (depth first: two layers read the video tokens
  far better than one, lab/zoo/HISTORY.md);
- learns from the target's logits (token-level KL, as DistillSpec does) on the same training
  rows as the zoo's language stage, plus the reference answers' cross-entropy.

    python -m lab.zoo distill --pair qwen-tiny --out-dir .zoo-work/distilled   # the shipped recipe
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from lab.zoo.loop import prefetched
from lab.zoo.recipes import DISTILLED_DRAFT, PAIRS, ZooModel
from lab.zoo.rows import label_weights
from lab.zoo.supervision import IGNORE
from lab.zoo.train import (
    TrainConfig,
    export,
    language_batch,
    lr_at,
    weighted_next_token_loss,
    without_labels,
)
from specvid.models.loader import ADAPTERS, load_model
from specvid.models.tiny import build_tiny_model
from specvid.shapesworld.world import split_seeds


def tower_prefixes(family: str) -> tuple[str, ...]:
    """State-dict prefixes of the vision tower a draft copies from its target and freezes."""
    if family == "qwen2_5_vl":
        # The merger's last projection maps into the language model's width: the draft's own.
        return ("model.visual.patch_embed.", "model.visual.blocks.", "model.visual.merger.ln_q.",
                "model.visual.merger.mlp.0.")
    return ("model.vision_tower.",)


def copy_tower(target: torch.nn.Module, draft: torch.nn.Module, family: str) -> int:
    """Copy the target's tower weights into the draft and freeze them; returns tensors copied."""
    prefixes = tower_prefixes(family)
    source = {k: v for k, v in target.state_dict().items() if k.startswith(prefixes)}
    missing, _ = draft.load_state_dict(source, strict=False)
    params = dict(draft.named_parameters())
    for name in source:
        if name in params:
            params[name].requires_grad_(False)
    return len(source) - len([k for k in source if k in missing])


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Mean KL(teacher || student) over the positions that predict a labelled token.

    student, teacher [B, L, V] logits (position t predicts token t + 1), labels [B, L].
    """
    predicts = labels[:, 1:] != IGNORE  # [B, L-1]
    s = F.log_softmax(student[:, :-1][predicts].float() / temperature, -1)  # [N, V]
    t = F.log_softmax(teacher[:, :-1][predicts].float() / temperature, -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def distill_draft(
    pair: str,
    cfg: TrainConfig,
    out_dir: Path,
    kl_weight: float = 1.0,
    progress: Callable[[int, int, float, float], None] = lambda step, total, kl, ce: None,
) -> Path:
    """Train a distilled draft for `pair` against the shipped target; returns its checkpoint."""
    zoo_pair = PAIRS[pair]
    spec = ZooModel(f"{pair}-draft", zoo_pair.target.family, DISTILLED_DRAFT, seed=30, train_steps=cfg.steps)
    teacher = load_model(zoo_pair.target.name)  # float32, column-major weights: inference only
    torch.manual_seed(cfg.seed + spec.seed)
    model, tokenizer = build_tiny_model(spec.family, spec.size, spec.seed, teacher.tokenizer)
    copied = copy_tower(teacher.model, model, spec.family)
    if not copied:
        raise RuntimeError("no tower weights were copied: the draft's tower does not match the target's")
    adapter = ADAPTERS[spec.family](model, tokenizer, name=spec.name)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    clip_pool = split_seeds("train", cfg.train_clips)
    model.train()
    batches = prefetched(lambda s: language_batch(adapter, spec, cfg, clip_pool, s), 0, cfg.steps)
    for step, (rows, batch, _) in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        inputs = without_labels(batch)
        with torch.no_grad():
            teacher_logits = teacher.model(**inputs, use_cache=False).logits
        logits = model(**inputs, use_cache=False).logits
        weights = label_weights(rows, batch["labels"].shape[1], cfg.anchor_weight)
        kl = distillation_loss(logits, teacher_logits, batch["labels"])
        ce = weighted_next_token_loss(logits, batch["labels"], weights)
        loss = kl_weight * kl + ce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        progress(step + 1, cfg.steps, kl.item(), ce.item())
    return export(model, tokenizer, out_dir / spec.name)
