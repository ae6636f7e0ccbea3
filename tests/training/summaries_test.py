"""Progress lines (ETA) and the lasso heatmap."""

import numpy as np

from mtssl_tf.training import summaries


def test_eta_uses_the_rate_after_tracing():
  line = summaries.progress_line(
      10, 110, {"rp": 1.25}, {"rp": 4.0}, steps_per_sec=0.1, cost=10.0,
      eta_steps_per_sec=2.0)
  assert line == ("step 10/110 | rp loss 1.2500 4.00 img/s | 0.100 steps/s | "
                  "cost 10 | ETA 0:00:50")
  assert line.endswith("ETA 0:00:50")  # 100 steps at 2/s, not at 0.1/s
  assert summaries.progress_line(1, 5, {}, {}, 0.1, 1.0).endswith("ETA ?")
  assert summaries.progress_line(5, 5, {}, {}, 0.1, 1.0).endswith("ETA 0:00:00")


def test_alpha_heatmap_brightness():
  image = summaries.alpha_heatmap(np.array([[1.0, 0.25]]), cell=2, gap=1)
  assert image.shape == (1, 4, 7, 3)
  assert image[0, 1, 1, 0] == 255 and image[0, 1, 4, 0] == 128  # sqrt(.25)
  assert image[0, 0, 0, 0] == 0
