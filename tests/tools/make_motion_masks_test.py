"""Tests of tools/make_motion_masks.py on small generated videos.

The tool runs as a user runs it, in its own process (entry points define
absl flags, which must not meet another entry point's in the test process).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data import synthetic_video
from mtssl_tf.data import tfrecord_format
from mtssl_tf.tasks import motion_segmentation
from mtssl_tf.tasks import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _run_tool(**flag_values):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  args = [f"--{k}={v}" for k, v in flag_values.items()]
  return subprocess.run(
      [sys.executable, "-m", "tools.make_motion_masks", *args], cwd=ROOT,
      env=env, capture_output=True, text=True, timeout=900)


def _records(pattern):
  files = tf.io.gfile.glob(pattern)
  for serialized in tf.data.TFRecordDataset(files):
    yield tf.io.parse_single_example(serialized,
                                     tfrecord_format.MOTION_FEATURES)


@pytest.mark.slow
def test_videos_to_records_the_ms_task_reads(tmp_path):
  videos = tmp_path / "videos"
  (videos / "cam").mkdir(parents=True)
  truth = {}
  for name, motion, seed in (("cam/zoom.avi", "pan+zoom", 40),
                             ("still.avi", "static", 41)):
    video = synthetic_video.generate_video(num_frames=21, seed=seed,
                                           camera_motion=motion)
    synthetic_video.write_video(str(videos / name), video.frames)
    truth[name] = video.masks
  synthetic_video.write_video(str(videos / "one.avi"), video.frames[:1])
  synthetic_video.write_video(str(videos / "short.avi"), video.frames[:7])
  (videos / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(9000))
  out = tmp_path / "records"

  run = _run_tool(videos=videos, output_dir=out, workers=2)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "Done: 2 of 5 videos, 4 records" in run.stdout
  assert "[5/5 videos]" in run.stderr and "frames/s" in run.stderr
  with open(out / "manifest.json") as f:
    manifest = json.load(f)
  assert {v["video"]: v["reason"] for v in manifest["skipped_videos"]} == {
      "garbage.mp4": "unreadable", "one.avi": "one_frame",
      "short.avi": "too_short"}
  assert sorted(n for n in os.listdir(out) if ".tfrecord" in n) == sorted(
      r["output"] for r in manifest["reports"] if r["status"] == "done")
  assert not [n for n in os.listdir(out) if "partial" in n]

  # Every mask agrees with the exact ground truth.
  seen = set()
  for record in _records(str(out / "*.tfrecord")):
    name = record[tfrecord_format.VIDEO_ID].numpy().decode()
    index = int(record[tfrecord_format.FRAME_INDEX])
    mask = tf.io.decode_png(record[tfrecord_format.MASK_ENCODED]).numpy()
    mask = mask[..., 0] > 0
    expected = truth[name][index]
    assert (mask & expected).sum() / (mask | expected).sum() >= 0.6, (
        name, index)
    seen.add((name, index))
  # Windows 0..10 and 10..20 label their middle frames.
  assert seen == {("cam/zoom.avi", 5), ("cam/zoom.avi", 15),
                  ("still.avi", 5), ("still.avi", 15)}

  # The ms task trains on them.
  task = registry.build("ms", motion_segmentation.Config(head_width=8))
  data = config_lib.DataConfig(source="tfrecord",
                               path=str(out / "*.tfrecord"))
  images, labels = next(iter(task.make_dataset(data, 2, seed=0)[0]))
  assert images.shape == (2, 240, 320, 3)
  assert labels["mask"].shape == (2, 30, 40)
  assert 0 < float(tf.reduce_mean(labels["mask"])) < 0.6

  # A rerun skips every finished (or skipped) video and rewrites nothing.
  shards = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)
            if n.endswith(".tfrecord")}
  again = _run_tool(videos=videos, output_dir=out)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "5 already finished, 0 to process" in again.stderr
  assert "Done: 2 of 5 videos, 4 records" in again.stdout
  assert shards == {n: os.stat(out / n).st_mtime_ns for n in shards}


@pytest.mark.slow
def test_huge_resolution_is_skipped_and_listed(tmp_path):
  video = synthetic_video.generate_video(num_frames=2, height=48, width=64)
  synthetic_video.write_video(str(tmp_path / "big.avi"), video.frames)
  run = _run_tool(videos=tmp_path / "*.avi", output_dir=tmp_path / "out",
                  max_pixels=1000)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "skipped big.avi: huge_resolution (64x48 frames exceed" in run.stdout


@pytest.mark.slow
def test_start_up_errors(tmp_path):
  (tmp_path / "file").write_text("")
  run = _run_tool(videos=tmp_path, output_dir=tmp_path / "file" / "out")
  assert run.returncode == 1
  assert "error: Output directory" in run.stderr and "not writable" in (
      run.stderr)
  run = _run_tool(videos=tmp_path / "nothing*.mp4", output_dir=tmp_path / "o")
  assert run.returncode == 1
  assert "error: No videos found" in run.stderr
