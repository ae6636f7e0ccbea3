"""mtssl_tf: multi-task self-supervised visual learning (Doersch & Zisserman, ICCV 2017) in TF 2 / Keras 2."""

import setuptools

# The stack is pinned as measured in SPEC.md ("The dependency stack"):
# tf-models-official 2.20.0 requires tensorflow~=2.20.0, and tf_keras (Keras 2)
# is what Model Garden and tf.distribute custom loops are built on.
# tensorflow-addons and tensorflow-io are deliberately absent: neither loads on
# TF 2.20 (see SPEC.md).
INSTALL_REQUIRES = [
    "tensorflow~=2.20.0",
    "tf-keras~=2.20.0",
    "tf-models-official==2.20.0",
    "absl-py>=1.0",
    "numpy>=1.26",
    "opencv-python-headless>=4.8",
    # The built-in sample photos ship inside scikit-image's wheel
    # (skimage.data.astronaut, chelsea, coffee, ...); nothing is downloaded.
    "scikit-image>=0.22",
    # DataConfig(source="tfds"): tensorflow-datasets (a tf-models-official
    # dependency) 4.9.x imports importlib_resources when it prepares or loads
    # a builder, but declares it only for Python < 3.9.
    "importlib_resources>=6",
    # NYU Depth v2 (evaluation/nyu_depth.py): the labelled file is MATLAB
    # v7.3 = HDF5 (h5py), the official splits.mat is MATLAB v5 (scipy.io).
    "h5py>=3.8",
    "scipy>=1.10",
    # VOC07 linear SVMs and low-shot (evaluation/voc07_svm.py): LinearSVC and
    # cross-validation, as Goyal et al. 2019's benchmark and VISSL use.
    "scikit-learn>=1.3",
    # Figures of python -m mtssl_tf.report (paper Figures 3-5);
    # and colour maps of depth images in TensorBoard (evaluation/nyu_depth.py).
    "matplotlib>=3.7",
]

TEST_REQUIRES = [
    "pytest>=7",
    # The README's test command runs the suite on 2 workers, one test file
    # per worker at a time (-n 2 --dist loadfile): module-scoped fixtures
    # (a trained tiny detector, a trained depth network) are built once.
    "pytest-xdist>=3.5",
    # TF-Slim's resnet_v2 is the reference architecture of the paper; the
    # equivalence tests build it. Also a tf-models-official dependency.
    "tf-slim==1.1.0",
]

setuptools.setup(
    name="mtssl_tf",
    version="0.1.0",
    description=(
        "Multi-task self-supervised visual learning (Doersch & Zisserman, "
        "ICCV 2017) in TensorFlow 2 / tf_keras"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=setuptools.find_packages(include=["mtssl_tf", "mtssl_tf.*"]),
    package_data={"mtssl_tf": ["data/assets/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    license="Apache-2.0",
)
