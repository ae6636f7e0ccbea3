"""Built-in sample photos: the colour photographs shipped inside scikit-image.

``DataConfig(source="builtin")`` trains on these, so every task runs out of the
box with no download. They are the colour (RGB) photos whose files are in the
scikit-image wheel itself; grayscale images, synthetic test patterns
(colorwheel, logo) and the files scikit-image would fetch from the internet are
left out. Nine photos, 300x451 up to 1411x1411 pixels.
"""

from typing import List, Tuple

import numpy as np

# (name, loader) where the loader returns a uint8 [H, W, 3] array.
_PHOTOS = (
    ("astronaut", lambda d: d.astronaut()),
    ("chelsea", lambda d: d.chelsea()),
    ("coffee", lambda d: d.coffee()),
    ("rocket", lambda d: d.rocket()),
    ("motorcycle_left", lambda d: d.stereo_motorcycle()[0]),
    ("motorcycle_right", lambda d: d.stereo_motorcycle()[1]),
    ("hubble_deep_field", lambda d: d.hubble_deep_field()),
    ("immunohistochemistry", lambda d: d.immunohistochemistry()),
    ("retina", lambda d: d.retina()),
)


def photo_names() -> List[str]:
  """Names of the built-in photos, in loading order."""
  return [name for name, _ in _PHOTOS]


def load_photos() -> List[Tuple[str, np.ndarray]]:
  """Loads the built-in photos as ``(name, uint8 [H, W, 3])`` pairs.

  Photos this scikit-image version lacks, or only offers as a download, are
  skipped; the list is never empty on a supported install.

  Raises:
    ValueError: if scikit-image provides none of the photos.
  """
  from skimage import data  # pylint: disable=g-import-not-at-top
  photos = []
  for name, load in _PHOTOS:
    try:
      image = np.asarray(load(data))
    except (AttributeError, ImportError, OSError, ValueError):
      continue
    if image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.uint8:
      photos.append((name, image))
  if not photos:
    raise ValueError(
        "No built-in sample photos could be loaded from scikit-image (tried "
        f"{photo_names()}); install scikit-image>=0.19 or use "
        "DataConfig(source='folder', path=...).")
  return photos
