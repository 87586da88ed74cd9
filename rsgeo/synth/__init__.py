"""``rsgeo synth``: procedural pre/post-event cities, the data rsgeo ships with.

- :func:`generate_scene` builds one scene in memory (:class:`Scene`).
- :func:`write_scenes` writes scenes as GeoTIFFs + a footprints GeoPackage + JSON.
"""

from rsgeo.synth.scene import Scene, generate_scene
from rsgeo.synth.surface import LANDCOVER
from rsgeo.synth.write import write_scenes
from rsgeo.viz import LANDCOVER_COLORS

__all__ = ["LANDCOVER", "LANDCOVER_COLORS", "Scene", "generate_scene", "write_scenes"]
