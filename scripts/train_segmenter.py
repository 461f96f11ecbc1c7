"""Train and ship ControlNet++'s condition extractor for the shapes world (zc/controls/reward.py):
zc/weights/shape-segmenter, and print how well it reads renders back (held-out scenes).

    python scripts/train_segmenter.py          # ~40 s on one CPU thread
"""
import torch

from zc.controls import reward
from zc.world.pairs import PairedData, disc_masks

if __name__ == "__main__":
    seg = reward.train_segmenter(progress=True)
    seg.save_pretrained(reward.SHIPPED)
    test = PairedData.generate(64, seed=100, split="test")
    masks, images = disc_masks(test.sources), test.targets.float() / 255
    print(f"IoU with the disc, 64 held-out renders: {reward.agreement(seg, images, masks).mean():.3f}; "
          f"with the disc moved by 16 px: {reward.agreement(seg, images, torch.roll(masks, 16, 2)).mean():.3f}")
