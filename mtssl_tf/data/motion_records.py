"""Videos -> motion-segmentation TFRecords (the library of
``tools/make_motion_masks.py``; paper §2, labels of ``motion_masks.py``).

Output layout in ``output_dir``, one shard per video:
  <video key>.tfrecord   records of ``tfrecord_format.motion_example``: frame
                         PNG 240x320 RGB, mask PNG 0/255, video id, index
  <video key>.done.json  the video's report, written LAST (after the shard
                         was renamed into place): its presence means done
  manifest.json          every video's report and the totals of the run

``<video key>`` is the video's folder and file name with every character
outside [A-Za-z0-9_-] replaced by "_", plus 8 hex digits of the SHA-1 of
its real path: unique, the same whether the video was found through a folder
or a glob (so reruns resume either way), and never containing ".tfrecord".
A shard is written as ``<key>.partial`` and renamed when complete; readers
(the ms task's "folder" source takes names containing ".tfrecord") never see
a partial shard, and an interrupted run leaves only ".partial" files, which
the next run overwrites.

Resuming: a video whose marker exists and records the same file size and
modification time as now is not processed again (a changed file is). Bad
videos (``video_frames.VideoError`` reasons, or any decoding error) get a
marker with status "skipped" and the reason, so reruns skip them too; they
are listed in the manifest and the summary. Videos whose every window lacks
a camera model are skipped with reason "no_camera_model" (no shard). A
truncated video (fewer frames decoded than its header declares) is used with
a "note" in its report, listed in the manifest's "noted_videos"; files of a
folder without a video extension are listed in "ignored_files". So every
candidate file is used or listed with a reason.
"""

import dataclasses
import glob
import hashlib
import json
import multiprocessing
import os
import re
import sys
import time

import cv2

from mtssl_tf.data import motion_masks
from mtssl_tf.data import tfrecord_format
from mtssl_tf.data import video_frames

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg",
                    ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".ts", ".mts",
                    ".mjpeg", ".gif")
MANIFEST = "manifest.json"
_GLOB_CHARS = re.compile(r"[*?\[]")
# Workers are forked where possible: a spawned worker re-imports TensorFlow
# (10-30 s of start-up on a busy 2-core machine); the parent has run no
# TensorFlow op and no OpenCV call before forking, so no thread pools exist
# yet that a fork could break.
_START_METHOD = ("fork" if "fork" in multiprocessing.get_all_start_methods()
                 else "spawn")


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """One run of the motion-record builder.

  Attributes:
    videos: a folder (searched recursively for ``extensions``) or a glob
      (every matching file is tried, whatever its extension).
    output_dir: where shards, markers and the manifest go (created).
    frame_stride: label every ``frame_stride``-th frame (10: windows of
      11 frames overlap by one frame).
    max_records_per_video: at most this many records per video (0: all).
    max_pixels: videos with larger frames are skipped ("huge_resolution");
      smaller ones are downscaled to 240x320 while decoding.
    workers: videos processed in parallel (processes).
    extensions: file name endings taken from a folder (case-insensitive).
    masks: the labeller's options.
  """
  videos: str
  output_dir: str
  frame_stride: int = 10
  max_records_per_video: int = 0
  max_pixels: int = video_frames.DEFAULT_MAX_PIXELS
  workers: int = 1
  extensions: tuple = VIDEO_EXTENSIONS
  masks: motion_masks.MotionMaskConfig = motion_masks.MotionMaskConfig()


def find_videos(pattern, extensions=VIDEO_EXTENSIONS):
  """Returns sorted ``(path, relative name)`` pairs of a folder or a glob."""
  if os.path.isdir(pattern):
    root = pattern
    paths = [os.path.join(d, n)
             for d, _, names in os.walk(pattern, followlinks=True)
             for n in names if n.lower().endswith(tuple(extensions))]
  else:
    prefix = _GLOB_CHARS.split(pattern, maxsplit=1)[0]
    root = prefix if prefix.endswith(os.sep) else os.path.dirname(prefix)
    paths = [p for p in glob.glob(pattern, recursive=True)
             if os.path.isfile(p)]
  return sorted((p, os.path.relpath(p, root or ".")) for p in paths)


def ignored_files(config):
  """Files of a ``videos`` folder not taken as videos (their extension is
  not in ``extensions``), with the reason; none for a glob."""
  if not os.path.isdir(config.videos):
    return []
  extensions = tuple(e.lower() for e in config.extensions)
  return [{"file": os.path.relpath(os.path.join(d, n), config.videos),
           "reason": "not a video file extension (--extensions)"}
          for d, _, names in sorted(os.walk(config.videos, followlinks=True))
          for n in sorted(names) if not n.lower().endswith(extensions)]


def video_key(path):
  """``<parent>_<name>-<8 hex digits>``: readable, unique per real path."""
  real = os.path.realpath(path)
  tail = os.path.join(os.path.basename(os.path.dirname(real)),
                      os.path.basename(real))
  safe = re.sub(r"[^A-Za-z0-9_-]+", "_", tail).strip("_")[-80:]
  digest = hashlib.sha1(real.encode("utf-8")).hexdigest()[:8]
  return f"{safe}-{digest}"


def check_output_dir(path):
  """Creates ``path`` and proves it writable; raises OSError saying why."""
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write_probe-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"Output directory {path!r} is not writable "
                  f"({e.strerror or e}). Choose another --output_dir or fix "
                  f"its permissions.") from e


def _write_json(path, value):
  """Writes JSON atomically (temp file, then rename)."""
  temp = f"{path}.tmp-{os.getpid()}"
  with open(temp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(temp, path)


def _fingerprint(path):
  stat = os.stat(path)
  return {"size": stat.st_size, "mtime": stat.st_mtime}


def finished_report(path, key, output_dir):
  """The stored report of a video finished by an earlier run, or None."""
  marker = os.path.join(output_dir, f"{key}.done.json")
  try:
    with open(marker) as f:
      report = json.load(f)
  except (OSError, ValueError):
    return None
  try:
    if {k: report.get(k) for k in ("size", "mtime")} != _fingerprint(path):
      return None
  except OSError:
    return None
  if report.get("status") == "done" and not os.path.isfile(
      os.path.join(output_dir, report.get("output", ""))):
    return None
  return report


def _png(image):
  ok, encoded = cv2.imencode(".png", image)
  if not ok:
    raise ValueError("PNG encoding failed")
  return encoded.tobytes()


def process_video(path, relative_name, config):
  """Labels one video and writes its shard and marker; returns its report.

  The report (also the marker's content) has "video", "key", "status"
  ("done" or "skipped"), "reason" and "detail" (skipped), "note" (a done
  video that decoded fewer frames than its header declares), "frames"
  (decoded),
  "records", "unlabelled" (windows without a camera model), "output",
  "seconds", and the file's "size" and "mtime".
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  key = video_key(path)
  output = f"{key}.tfrecord"
  partial = os.path.join(config.output_dir, f"{key}.partial")
  report = {"video": relative_name, "key": key, "frames": 0, "records": 0,
            "unlabelled": 0, "output": ""}
  start = time.time()
  stats = {}
  writer = None
  try:
    report.update(_fingerprint(path))
    frames = video_frames.read_frames(path, config.max_pixels, stats)
    for index, frame, mask in video_frames.labelled_frames(
        frames, config.frame_stride, config.masks,
        config.max_records_per_video):
      if mask is None:
        report["unlabelled"] += 1
        continue
      if writer is None:
        writer = tf.io.TFRecordWriter(partial)
      writer.write(tfrecord_format.motion_example(
          _png(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)), _png(mask),
          video_id=relative_name, frame_index=index))
      report["records"] += 1
    if writer is None:
      raise video_frames.VideoError(
          "no_camera_model", f"none of {report['unlabelled']} windows has a "
          "camera model (shot cuts, or mostly moving scene)")
    writer.close()
    writer = None
    os.replace(partial, os.path.join(config.output_dir, output))
    report.update(status="done", output=output)
    if "truncated" in stats:
      report["note"] = stats["truncated"]
  except video_frames.VideoError as e:
    report.update(status="skipped", reason=e.reason, detail=e.detail)
    if "truncated" in stats:  # e.g. too short because it was cut off
      report["detail"] += f"; {stats['truncated']}"
  except Exception as e:  # pylint: disable=broad-except
    # A decoder or codec failure in one video must not stop the others.
    report.update(status="skipped", reason="error",
                  detail=f"{type(e).__name__}: {e}")
  finally:
    if writer is not None:
      writer.close()
    if os.path.exists(partial):
      os.remove(partial)
  report["frames"] = stats.get("frames", 0)
  report["seconds"] = round(time.time() - start, 3)
  _write_json(os.path.join(config.output_dir, f"{key}.done.json"), report)
  return report


def _worker_init():
  # One OpenCV thread per process: the processes already use the cores.
  cv2.setNumThreads(1)


def _process(job):
  return process_video(*job)


def _eta(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(config, out=None):
  """Processes every video of ``config`` and writes the manifest.

  Prints one progress line per finished video to ``out`` (default
  stderr). Returns the manifest dict.

  Raises:
    OSError: the output directory is not writable.
    ValueError: no videos were found.
  """
  out = out or sys.stderr
  check_output_dir(config.output_dir)
  videos = find_videos(config.videos, config.extensions)
  if not videos:
    raise ValueError(
        f"No videos found at {config.videos!r} (a folder is searched "
        f"recursively for {', '.join(config.extensions)}; or pass a glob).")
  reports, jobs = [], []
  for path, name in videos:
    report = finished_report(path, video_key(path), config.output_dir)
    if report is None:
      jobs.append((path, name, config))
    else:
      reports.append(dict(report, resumed=True))
  print(f"{len(videos)} videos, {len(reports)} already finished, "
        f"{len(jobs)} to process with {config.workers} worker(s).", file=out,
        flush=True)
  start, frames = time.time(), 0
  if config.workers > 1 and len(jobs) > 1:
    pool = multiprocessing.get_context(_START_METHOD).Pool(
        min(config.workers, len(jobs)), initializer=_worker_init)
    results = pool.imap_unordered(_process, jobs)
  else:
    pool, results = None, map(_process, jobs)
  try:
    for done, report in enumerate(results, start=1):
      reports.append(report)
      frames += report["frames"]
      elapsed = time.time() - start
      print(f"[{done}/{len(jobs)} videos] {frames} frames in {elapsed:.0f} s "
            f"({frames / max(elapsed, 1e-9):.1f} frames/s), ETA "
            f"{_eta(elapsed / done * (len(jobs) - done))}  "
            f"{report['video']}: {report['status']}"
            f"{' (' + report['reason'] + ')' if 'reason' in report else ''}",
            file=out, flush=True)
  finally:
    if pool is not None:
      pool.terminate()
  return write_manifest(config, reports, time.time() - start)


def write_manifest(config, reports, seconds):
  """Writes ``manifest.json`` (all videos, totals, options); returns it."""
  reports = sorted(reports, key=lambda r: r["video"])
  skipped = [r for r in reports if r["status"] != "done"]
  processed = [r for r in reports if not r.get("resumed")]
  manifest = {
      "videos": len(reports),
      "done": len(reports) - len(skipped),
      "skipped": len(skipped),
      "records": sum(r["records"] for r in reports),
      "seconds": round(seconds, 3),
      "frames_per_second": round(
          sum(r["frames"] for r in processed) / max(seconds, 1e-9), 2),
      "skipped_videos": [{k: r.get(k) for k in ("video", "reason", "detail")}
                         for r in skipped],
      "noted_videos": [{"video": r["video"], "note": r["note"]}
                       for r in reports if r.get("note")],
      "ignored_files": ignored_files(config),
      # Through JSON, so that the returned dict equals the file's content.
      "options": json.loads(json.dumps(dataclasses.asdict(config))),
      "reports": reports,
  }
  _write_json(os.path.join(config.output_dir, MANIFEST), manifest)
  return manifest
