r"""Makes motion-segmentation TFRecords (for the ms task) from videos.

Paper §2: every ``--frame_stride``-th frame of each video, resized to
240x320 (centre crop to 4:3), with the mask of the pixels whose dense track
over the 10 frames around it (5 before, 5 after; ``--label_frame``) is not
explained by the camera's motion (``mtssl_tf/data/motion_masks.py``: DIS
optical flow, forward-backward checked tracks, a RANSAC homography per frame
pair, a deviation test on each whole track, morphological clean-up). The
first 5 and last 5 frames of a video get no label.

  python -m tools.make_motion_masks --videos=/data/soundnet \
      --output_dir=/data/ms_records --workers=2

``--videos`` is a folder (searched recursively for video file endings) or a
glob (every match is tried). One shard ``<video>.tfrecord`` per video; train
with ``DataConfig(source="folder", path=<output_dir>)`` or
``source="tfrecord", path="<output_dir>/*.tfrecord"``. A rerun skips the
videos already finished; unreadable, empty, one-frame, too short (< 11
frames) and huge-resolution videos are skipped and listed in the summary and
``<output_dir>/manifest.json`` (``mtssl_tf/data/motion_records.py``).

Speed on this machine (2 CPU cores shared with other jobs, 240x320 MJPG
videos), measured with the old half-resolution flow (now --flow=dis_fast):
one worker decodes and labels about 11 video frames/s at --frame_stride=10
(about 1 record/s: each record needs 10 flow pairs both ways, dense tracking
and 10 RANSAC fits), two workers about 13 frames/s; --frame_stride=1 gives
about 3.5 records/s (flows are shared between overlapping windows). The
default full-resolution flow is ~3.7x slower (sharper masks; see
``motion_masks.py``). The progress line reports frames/s and the ETA.

Exit status: 0 when the run finished (even with skipped videos), 1 when it
could not start (no videos, unwritable output directory, bad flags).
"""

from mtssl_tf import quiet  # first: TF's log level is read when TF loads
quiet.configure_if_main(__name__)
# pylint: disable=g-import-not-at-top,wrong-import-position

import sys

from absl import app
from absl import flags

from mtssl_tf.data import motion_masks
from mtssl_tf.data import motion_records
from mtssl_tf.data import video_frames

_VIDEOS = flags.DEFINE_string(
    "videos", None, "A folder of videos (searched recursively) or a glob.",
    required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None,
                                  "Where the TFRecords go.", required=True)
_FRAME_STRIDE = flags.DEFINE_integer(
    "frame_stride", 10, "Label every n-th frame of a video.", lower_bound=1)
_MAX_RECORDS = flags.DEFINE_integer(
    "max_records_per_video", 0, "At most this many records per video "
    "(0: no limit).", lower_bound=0)
_MAX_PIXELS = flags.DEFINE_integer(
    "max_pixels", video_frames.DEFAULT_MAX_PIXELS,
    "Skip videos whose frames have more pixels than this.", lower_bound=1)
_WORKERS = flags.DEFINE_integer("workers", 1, "Videos processed in parallel.",
                                lower_bound=1)
_EXTENSIONS = flags.DEFINE_list(
    "extensions", list(motion_records.VIDEO_EXTENSIONS),
    "File endings taken from a --videos folder.")
_FLOW = flags.DEFINE_enum("flow", "dis", list(motion_masks.FLOW_METHODS),
                          "Dense optical flow method (dis_fast: half "
                          "resolution, ~3.7x faster, blurrier masks).")
_TRACK_LENGTH = flags.DEFINE_integer(
    "track_length", 10, "Frames a point is tracked over (paper: 10).",
    lower_bound=1)
_LABEL_FRAME = flags.DEFINE_enum(
    "label_frame", "middle", list(motion_masks.LABEL_FRAMES),
    "Frame of each window the mask belongs to: the middle one (tracks run "
    "both ways, no halo along the motion) or the first (forward only).")
_MIN_DEVIATION = flags.DEFINE_float(
    "min_deviation", 1.0, "Camera-compensated displacement (px at 240x320, "
    "accumulated along a track) above which a track moves.", lower_bound=0.0)
_NOISE_FACTOR = flags.DEFINE_float(
    "noise_factor", 4.0, "A track must also move more than this times the "
    "camera model's residual (times sqrt(steps)).", lower_bound=0.0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = motion_records.RunConfig(
      videos=_VIDEOS.value, output_dir=_OUTPUT_DIR.value,
      frame_stride=_FRAME_STRIDE.value,
      max_records_per_video=_MAX_RECORDS.value, max_pixels=_MAX_PIXELS.value,
      workers=_WORKERS.value,
      extensions=tuple(e if e.startswith(".") else "." + e
                       for e in _EXTENSIONS.value),
      masks=motion_masks.MotionMaskConfig(
          track_length=_TRACK_LENGTH.value, flow=_FLOW.value,
          label_frame=_LABEL_FRAME.value,
          min_deviation=_MIN_DEVIATION.value,
          noise_factor=_NOISE_FACTOR.value))
  try:
    manifest = motion_records.run(config)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"Done: {manifest['done']} of {manifest['videos']} videos, "
        f"{manifest['records']} records, {manifest['frames_per_second']} "
        f"frames/s; manifest {config.output_dir}/{motion_records.MANIFEST}")
  for video in manifest["skipped_videos"]:
    print(f"  skipped {video['video']}: {video['reason']} ({video['detail']})")
  for video in manifest["noted_videos"]:
    print(f"  note on {video['video']}: {video['note']}")
  if manifest["ignored_files"]:
    print(f"  ignored {len(manifest['ignored_files'])} files without a video "
          f"extension (listed in the manifest), e.g. "
          f"{manifest['ignored_files'][0]['file']}")
  return 0


if __name__ == "__main__":
  app.run(main)
