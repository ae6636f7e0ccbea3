"""Tests of data/motion_records.py: shards, markers, resuming, manifest.

The tool's flags and processes are tested in tests/tools; here the library
runs in-process with one worker.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.data import motion_records
from mtssl_tf.data import synthetic_video
from mtssl_tf.data import tfrecord_format


def _write(path, num_frames, seed=0, camera_motion="pan+zoom"):
  video = synthetic_video.generate_video(num_frames=num_frames, seed=seed,
                                         camera_motion=camera_motion)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  synthetic_video.write_video(str(path), video.frames)
  return video


def _read(path):
  records = []
  for serialized in tf.data.TFRecordDataset(str(path)):
    parsed = tf.io.parse_single_example(serialized,
                                        tfrecord_format.MOTION_FEATURES)
    records.append({k: v.numpy() for k, v in parsed.items()})
  return records


def _config(tmp_path, **kwargs):
  return motion_records.RunConfig(videos=str(tmp_path / "videos"),
                                  output_dir=str(tmp_path / "out"), **kwargs)


def test_find_videos_folder_and_glob(tmp_path):
  for name in ("a.mp4", "sub/b.AVI", "notes.txt", "sub/c.mov"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b"x")
  found = motion_records.find_videos(str(tmp_path))
  assert [name for _, name in found] == ["a.mp4", "sub/b.AVI", "sub/c.mov"]
  found = motion_records.find_videos(str(tmp_path / "sub" / "*"))
  assert [name for _, name in found] == ["b.AVI", "c.mov"]
  assert motion_records.find_videos(str(tmp_path / "none*")) == []


def test_video_key_is_unique_readable_and_path_independent(tmp_path):
  (tmp_path / "x").mkdir()
  key = motion_records.video_key(str(tmp_path / "x" / "clip.tfrecord.mp4"))
  assert key.startswith("x_clip_tfrecord_mp4-") and ".tfrecord" not in key
  assert key == motion_records.video_key(
      str(tmp_path / "x" / ".." / "x" / "clip.tfrecord.mp4"))
  assert key != motion_records.video_key(
      str(tmp_path / "y" / "x" / "clip.tfrecord.mp4"))


def test_check_output_dir(tmp_path):
  motion_records.check_output_dir(str(tmp_path / "new" / "dir"))
  assert os.listdir(tmp_path / "new" / "dir") == []
  (tmp_path / "file").write_text("")
  with pytest.raises(OSError, match="not writable"):
    motion_records.check_output_dir(str(tmp_path / "file" / "out"))


def test_process_video_writes_a_labelled_shard(tmp_path):
  video = _write(tmp_path / "videos" / "clip.avi", 21, seed=30)
  config = _config(tmp_path)
  os.makedirs(config.output_dir)
  path = str(tmp_path / "videos" / "clip.avi")
  report = motion_records.process_video(path, "clip.avi", config)
  assert report["status"] == "done" and report["records"] == 2
  assert report["frames"] == 21 and report["unlabelled"] == 0
  key = motion_records.video_key(path)
  assert sorted(os.listdir(config.output_dir)) == [f"{key}.done.json",
                                                   f"{key}.tfrecord"]
  records = _read(os.path.join(config.output_dir, report["output"]))
  # Windows 0..10 and 10..20 label their middle frames.
  assert [r["frame/index"] for r in records] == [5, 15]
  for record in records:
    frame = tf.io.decode_png(record["image/encoded"]).numpy()
    mask = tf.io.decode_png(record["mask/encoded"]).numpy()[..., 0]
    assert frame.shape == (240, 320, 3) and mask.shape == (240, 320)
    assert set(np.unique(mask)) <= {0, 255}
    assert record["video/id"] == b"clip.avi"
    truth = video.masks[record["frame/index"]]
    iou = ((mask > 0) & truth).sum() / ((mask > 0) | truth).sum()
    assert iou >= 0.6
  assert motion_records.finished_report(path, key, config.output_dir) == (
      report)


def test_a_failure_leaves_no_complete_looking_output(tmp_path, monkeypatch):
  _write(tmp_path / "videos" / "clip.avi", 21)
  config = _config(tmp_path)
  os.makedirs(config.output_dir)
  calls = []

  def fail_second(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
      raise RuntimeError("disk full")
    return tfrecord_format.motion_example(*args, **kwargs)

  monkeypatch.setattr(motion_records.tfrecord_format, "motion_example",
                      fail_second)
  path = str(tmp_path / "videos" / "clip.avi")
  report = motion_records.process_video(path, "clip.avi", config)
  assert report["status"] == "skipped" and report["reason"] == "error"
  assert "disk full" in report["detail"]
  names = os.listdir(config.output_dir)
  assert names == [f"{motion_records.video_key(path)}.done.json"]


def test_finished_report_notices_changes(tmp_path):
  _write(tmp_path / "videos" / "clip.avi", 11)
  config = _config(tmp_path)
  os.makedirs(config.output_dir)
  path = str(tmp_path / "videos" / "clip.avi")
  key = motion_records.video_key(path)
  report = motion_records.process_video(path, "clip.avi", config)
  assert motion_records.finished_report(path, key, config.output_dir)
  os.utime(path, (1, 1))                       # the video changed
  assert motion_records.finished_report(path, key, config.output_dir) is None
  report = motion_records.process_video(path, "clip.avi", config)
  os.remove(os.path.join(config.output_dir, report["output"]))
  assert motion_records.finished_report(path, key, config.output_dir) is None


def test_run_reports_bad_videos_and_resumes(tmp_path, monkeypatch, capsys):
  _write(tmp_path / "videos" / "good.avi", 11)
  short = _write(tmp_path / "videos" / "short.avi", 6)
  synthetic_video.write_video(str(tmp_path / "videos" / "one.avi"),
                              short.frames[:1])
  (tmp_path / "videos" / "garbage.mp4").write_bytes(b"\x00garbage" * 100)
  _write(tmp_path / "videos" / "cut.avi", 30, seed=1)
  data = (tmp_path / "videos" / "cut.avi").read_bytes()
  (tmp_path / "videos" / "cut.avi").write_bytes(data[:len(data) // 2])
  (tmp_path / "videos" / "notes.txt").write_text("not a video")
  config = _config(tmp_path)
  manifest = motion_records.run(config)
  assert (manifest["videos"], manifest["done"], manifest["skipped"],
          manifest["records"]) == (5, 2, 3, 2)
  assert {v["video"]: v["reason"] for v in manifest["skipped_videos"]} == {
      "garbage.mp4": "unreadable", "one.avi": "one_frame",
      "short.avi": "too_short"}
  # The cut-off video is used (>= 11 frames) and carries a note; the text
  # file is listed as ignored: every file is used or listed.
  (noted,) = manifest["noted_videos"]
  frames = next(r["frames"] for r in manifest["reports"]
                if r["video"] == "cut.avi")
  assert 11 <= frames < 30 and noted == {
      "video": "cut.avi",
      "note": f"truncated: decoded {frames} of the 30 frames its header "
              f"declares (a cut-off or damaged file)"}
  assert manifest["ignored_files"] == [
      {"file": "notes.txt",
       "reason": "not a video file extension (--extensions)"}]
  with open(os.path.join(config.output_dir, "manifest.json")) as f:
    assert json.load(f) == manifest
  assert "[5/5 videos]" in capsys.readouterr().err

  def must_not_run(*args):
    raise AssertionError(f"processed again: {args[1]}")

  monkeypatch.setattr(motion_records, "process_video", must_not_run)
  again = motion_records.run(config)
  assert all(r["resumed"] for r in again["reports"])
  assert (again["done"], again["skipped"], again["records"]) == (2, 3, 2)
  assert again["noted_videos"] == manifest["noted_videos"]
  assert "5 already finished, 0 to process" in capsys.readouterr().err


def test_run_without_videos(tmp_path):
  (tmp_path / "videos").mkdir()
  with pytest.raises(ValueError, match="No videos found"):
    motion_records.run(_config(tmp_path))
