"""The controls that came after the paper's ControlNet, or that chapter 10 measures against it: the
ablation variants and the concat-fine-tuned UNet (variants), T2I-Adapter, ControlNeXt, ControlNet-XS,
IP-Adapter and ControlNet++'s reward. Each registers its design (zc.designs) or its training callback
(zc.training_run.register_extra) when imported; `import zc` imports them all."""
