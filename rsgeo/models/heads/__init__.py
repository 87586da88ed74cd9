"""Dense and global heads over the 4 encoder feature maps of :mod:`rsgeo.models.backbones`.

``DPTHead`` (height, and the RS3DAda land-cover auxiliary), ``UperNetHead``
(segmentation), ``ChangeHead`` (siamese pre/post fusion + DPT), ``LinearHead``
(pooled features -> classes, linear probing).
"""

from rsgeo.models.heads.change import ChangeHead
from rsgeo.models.heads.dpt import DPTHead
from rsgeo.models.heads.linear import LinearHead
from rsgeo.models.heads.upernet import UperNetHead

__all__ = ["ChangeHead", "DPTHead", "LinearHead", "UperNetHead"]
