"""The evaluations' progress lines: rate and ETA, rate-limited."""

from mtssl_tf.evaluation import eval_base


def test_progress_lines_give_rate_and_eta(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(eval_base.time, "monotonic", lambda: clock[0])
  lines = []
  progress = eval_base.Progress(100, "knn features (train)", log=lines.append,
                                every_secs=10, done=10)
  progress.update(10)  # the first update starts the clock (after tracing)
  clock[0] = 110.0
  progress.update(30)  # 20 images in 10 s: 2 img/s, 70 left: 35 s
  clock[0] = 112.0
  progress.update(40)  # within every_secs of the last line: quiet
  clock[0] = 150.0
  progress.update(100)  # the last item always prints
  assert lines == ["knn features (train) 30/100 (30%) 2.00 img/s ETA 0:00:35",
                   "knn features (train) 100/100 (100%) 1.80 img/s ETA 0:00:00"]
