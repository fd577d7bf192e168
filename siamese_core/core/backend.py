"""TensorFlow and Keras, imported once, the way this project needs them: ``from siamese_core.core.backend import keras, tf``.

Two things must happen before their first import, so every module gets them from here:

* TensorFlow's C++ log level defaults to 2 (warnings and info hidden) unless the user set one.
* Keras (also when ``import tensorflow`` pulls it in) imports pandas (and with it pyarrow) and OpenCV
  if they are installed, only to accept DataFrames as training input and to draw bounding boxes,
  neither of which this project uses. Hiding them during that import keeps about 85 MB out of every
  training process. They stay importable afterwards; only those Keras extras are off.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_KERAS_EXTRAS = ("pandas", "cv2")

if "keras" not in sys.modules:
    hidden = [m for m in _KERAS_EXTRAS if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # `import m` now raises ImportError, which Keras handles
    try:
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
    finally:
        for m in hidden:
            del sys.modules[m]

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

__all__ = ["keras", "tf"]
