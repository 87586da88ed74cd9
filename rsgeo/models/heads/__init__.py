"""Dense and global heads over the 4 encoder feature maps of :mod:`rsgeo.models.backbones`."""

from rsgeo.models.heads.dpt import DPTHead

__all__ = ["DPTHead"]
