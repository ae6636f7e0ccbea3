"""Fixtures for the evaluation tests: labelled image sets in ImageNet's
on-disk layout, and tiny trunks in each source format."""

import json
import os

import numpy as np
from PIL import Image
import tensorflow as tf
import tf_keras

from mtssl_tf import config as config_lib
from mtssl_tf.models import resnet_v2
from mtssl_tf.training import checkpointing

TINY_TRUNK = config_lib.TrunkConfig(depth=14, base_width=8, output_stride=8)
# Three easy classes: red, green and blue textured images.
COLOURS = {"n00000001": (200, 40, 40), "n00000002": (40, 200, 40),
           "n00000003": (40, 40, 200)}


def textured_image(colour, seed, size=(40, 52)):
  rng = np.random.default_rng(seed)
  noise = rng.normal(0, 25, size + (3,))
  return np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)


def write_imagenet(root, per_class=(6, 3), flat_val=False, corrupt=0):
  """``root/train/<wnid>/*.JPEG`` and ``root/val`` (class folders, or flat
  with ``root/val_labels.txt``); ``corrupt`` undecodable files per split."""
  seed = 0
  labels = []
  for split, count in zip(("train", "val"), per_class):
    for wnid, colour in COLOURS.items():
      folder = os.path.join(root, split) if (split == "val" and flat_val) else (
          os.path.join(root, split, wnid))
      os.makedirs(folder, exist_ok=True)
      for i in range(count):
        seed += 1
        name = (f"ILSVRC2012_val_{seed:08d}" if split == "val" else
                f"{wnid}_{i}")
        Image.fromarray(textured_image(colour, seed)).save(
            os.path.join(folder, name + ".JPEG"), quality=95)
        if split == "val":
          labels.append(f"{name}.JPEG {wnid}")
      if corrupt and (split == "train" or not flat_val):
        for j in range(corrupt):
          with open(os.path.join(folder, f"broken_{j}.JPEG"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not a jpeg")
    if split == "val" and flat_val and corrupt:
      for j in range(corrupt):
        with open(os.path.join(root, "val", f"broken_{j}.JPEG"), "wb") as f:
          f.write(b"garbage")
        labels.append(f"broken_{j}.JPEG n00000001")
  with open(os.path.join(root, "val_labels.txt"), "w") as f:
    f.write("\n".join(labels) + "\n")
  return root


def write_model_dir(path, trunk_config=TINY_TRUNK, task_steps=None, seed=3):
  """A training directory (run.json + checkpoint) holding a random trunk."""
  tf_keras.utils.set_random_seed(seed)
  trunk = resnet_v2.build_trunk(trunk_config)
  state = checkpointing.RunState(list(task_steps or {"rp": 0}))
  for task, steps in (task_steps or {}).items():
    state.task_steps[task].assign(steps)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, checkpointing.RUN_FILE), "w") as f:
    json.dump(checkpointing.run_info(list(task_steps or {"rp": 0}),
                                     trunk_config, False), f)
  tf.train.CheckpointManager(tf.train.Checkpoint(trunk=trunk, state=state),
                             path, max_to_keep=1).save()
  return trunk
