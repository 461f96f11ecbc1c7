"""ControlNet++'s reward fine-tuning (Li et al. 2024) on the shapes world: a cycle-consistency loss.

A frozen discriminative model reads the condition back out of the image the ControlNet makes, and
the difference from the condition it was given becomes a loss. Sampling a whole image to score it
is too slow to train through, so ControlNet++ scores the *one-step* prediction of the clean image,
and only where that prediction is good, at small timesteps:

    x̂_0 = D((z_t − σ_t ε̂) / α_t)                 (from ε̂; from v̂: α_t z_t − σ_t v̂), t < t_max
    L = L_diffusion + λ · BCE(S(x̂_0), mask(c))     S: the shape segmenter, mask(c): the shape c implies

Here S is `ShapeSegmenter`, a few convolutions trained on the shapes world's renders (blurred and
noised, so that it also reads the softer images a diffusion model draws) to mark the shape's pixels,
given the image and its difference from the image's border colour; mask(c) is the disc an outline
implies (fill50k.disc_masks). The book's shape IoU finds the shape by its border colour too
(conditions.shape_regions), so S is close to a soft, learned version of the measure it is judged
by: a gain in shape IoU is partly the reward read back, and the measures the reward does not see
(fill accuracy, what the SD still does alone) must be read beside it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..resources import WEIGHTS
from ..training_run import Callback, register_extra
from ..world import shapes

__all__ = ["ShapeSegmenter", "train_segmenter", "agreement", "predicted_x0", "reward_loss", "SHIPPED",
    "load_segmenter", "condition_masks", "RewardLoss"]


class ShapeSegmenter(ModelMixin, ConfigMixin):
    """Image (B, 3, H, W) in [0, 1] -> logits (B, H, W) that each pixel belongs to the shape."""

    @register_to_config
    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(  # reads the image and its difference from the image's border colour
            nn.Conv2d(6, width, 3, stride=2, padding=1), nn.SiLU(),  # half size: the shape, not its pixels
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.SiLU(),
            nn.Conv2d(width, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.dtype)
        frame = torch.cat([x[..., :2, :].flatten(2), x[..., -2:, :].flatten(2),
                           x[..., :, :2].flatten(2), x[..., :, -2:].flatten(2)], dim=2)  # (B, 3, border pixels)
        border = frame.mean(2)[..., None, None]  # (B, 3, 1, 1): the background's colour, as the border shows it
        logits = self.net(torch.cat([x * 2 - 1, (x - border) * 4], dim=1))  # (B, 1, H/2, W/2)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def _augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Renders made to look more like generated images: a random blur and a little noise."""
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None]) / 16
    blurred = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3)
    mix = torch.rand(len(images), 1, 1, 1, generator=g)
    noisy = mix * blurred + (1 - mix) * images + 0.03 * torch.randn(images.shape, generator=g)
    return noisy.clamp(0, 1)


def train_segmenter(steps: int = 400, batch: int = 16, size: int = 64, seed: int = 0, lr: float = 3e-3,
                    progress: bool = False) -> ShapeSegmenter:
    """S trained from scratch on freshly drawn scenes of all four kinds (train-split colours)."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapeSegmenter()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in tqdm(range(steps), disable=not progress, desc="training the shape segmenter"):
        scenes = shapes.sample_scenes(batch, g)
        images = _augment(shapes.render(scenes, size), g)
        loss = F.binary_cross_entropy_with_logits(model(images), (shapes.coverage(scenes, size) > 0.5).float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def agreement(segmenter: ShapeSegmenter, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B,) IoU of the segmenter's mask of `images` with `masks`: the reward as a score in [0, 1]."""
    with torch.no_grad():
        found = segmenter(images) > 0
    masks = masks.to(found.device).bool()
    inter = (found & masks).flatten(1).sum(1).float()
    union = (found | masks).flatten(1).sum(1).float().clamp(min=1)
    return inter / union


def predicted_x0(scheduler, noisy: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The one-step estimate of the clean latent from the model's prediction (ε, v or x0)."""
    a = scheduler.alphas_cumprod.to(noisy.device)[t].float().view(-1, 1, 1, 1)
    alpha, sigma = a.sqrt(), (1 - a).sqrt()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return (noisy - sigma * pred) / alpha
    if kind == "v_prediction":
        return alpha * noisy - sigma * pred
    if kind == "sample":
        return pred
    raise ValueError(f"unsupported prediction_type {kind!r}")


def reward_loss(pipe, segmenter: ShapeSegmenter, x0_latents: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE between the segmenter's reading of the decoded one-step images and the condition's masks;
    differentiable through the (frozen) VAE decoder and segmenter back to the prediction."""
    images = pipe.vae.decode(x0_latents / pipe.vae.config.scaling_factor).sample  # (B, 3, H, W) in ~[-1, 1]
    logits = segmenter((images.float() / 2 + 0.5).clamp(0, 1))
    return F.binary_cross_entropy_with_logits(logits, masks.to(logits.device).float())


SHIPPED = WEIGHTS / "shape-segmenter"


def load_segmenter() -> ShapeSegmenter:
    """The shipped segmenter (train_segmenter() with its defaults: scripts/train_segmenter.py), or a
    freshly trained one where it is missing (about a minute on a CPU)."""
    if (SHIPPED / "config.json").is_file():
        return ShapeSegmenter.from_pretrained(SHIPPED).eval()
    return train_segmenter()


def condition_masks(condition: str, sources: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the shape a condition image says should be drawn (the segmenter's target)."""
    from ..world.pairs import disc_masks

    if condition in ("outline", "fill50k"):
        return disc_masks(sources)  # any closed outline: its inside, flood-filled
    raise ValueError(f"the reward compares the drawn shape with the shape an outline implies: it is defined "
                     f"for the outline condition (fill50k), not {condition!r}")


class RewardLoss(Callback):
    """zc.train --reward-weight λ: ControlNet++'s cycle-consistency term added to each batch's loss where
    t < cfg.reward_t_max (the one-step image is good there): λ · BCE(S(D(x̂_0)), mask(c)). The segmenter
    and the VAE stay frozen; the gradient reaches what trains through the prediction."""

    def __init__(self, cfg, pipe, eval_set, device):
        if cfg.condition_dropout > 0:
            raise ValueError("reward_weight with condition_dropout: the reward would ask for the shape of a condition "
                             "the model was not shown; use one or the other")
        condition_masks(cfg.condition, eval_set.batch([0], targets=False)["sources"])  # ValueError if undefined
        self.cfg, self.pipe = cfg, pipe
        self.segmenter = load_segmenter().to(device).requires_grad_(False)
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        pipe.vae.requires_grad_(False)  # the gradient goes through the decoder, not into it

    def extra_loss(self, batch, out) -> torch.Tensor | None:
        near = out.t < self.cfg.reward_t_max
        if not near.any():
            return None
        x0 = predicted_x0(self.scheduler, out.noisy[near], out.pred[near].float(), out.t[near])
        masks = condition_masks(self.cfg.condition, batch.sources[near.cpu()])
        return self.cfg.reward_weight * reward_loss(self.pipe, self.segmenter, x0.to(self.pipe.vae.dtype), masks)


register_extra(lambda cfg, pipe, eval_set, device: RewardLoss(cfg, pipe, eval_set, device)
               if cfg.reward_weight > 0 else None)
