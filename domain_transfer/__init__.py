"""domain_transfer: the unpaired GAN of darknet-kd's first method.

A CUT model (PatchNCE + identity NCE) with joliGEN's mobile_resnet_attn generator, a
PatchGAN and a projected discriminator on a frozen Darknet detector backbone, and a
box-mask semantic consistency loss; it translates labelled source images into the
target style and writes them as a Darknet dataset with the source labels unchanged.

Commands: ``domain-transfer train | translate | eval`` (see :mod:`domain_transfer.cli`).
"""
from .config import ConfigError, GanConfig, preset

__all__ = ["ConfigError", "GanConfig", "preset"]
