"""Find every face in a photo and say whether it wears a mask.

``mask_detect`` is the Python face of the Rust ``mask-detect`` crate: CenterFace finds the faces,
a MobileNetV2 classifies each one as ``mask`` / ``no_mask``. The models ship inside the package,
so installing the wheel is all that is needed::

    import mask_detect

    detector = mask_detect.Detector()             # packaged models, default configuration
    detection = detector.detect("photo.jpg")      # or bytes, or a numpy uint8 array
    print(detection.category, detection.num_masked, "/", detection.num_faces)
    print(detection.to_json())                    # the web API's JSON schema

``Detector.detect_many`` runs a batch on several threads; every detector method releases the GIL,
so one detector can also be shared by Python threads. Errors: ``ImageError`` for images that
cannot be decoded or are too large, ``ConfigError`` for out-of-range settings, ``ModelError`` for
missing or broken models and inference failures; all derive from ``mask_detect.Error``.
"""

from pathlib import Path

#: The models packaged with this module (``centerface.onnx``, ``mask_classifier.onnx``, their
#: licences and ``MODELS.md``); ``Detector()`` loads from here.
MODELS_DIR = Path(__file__).resolve().parent / "models"


class Error(Exception):
    """Base class of every error raised by the detector itself; the message is the Rust one."""


class ImageError(Error, ValueError):
    """The image is not usable: empty, not a supported format, corrupt, or too large."""


class ModelError(Error):
    """Everything that is not the image's fault: a missing or corrupt model file, an invalid
    configuration (see ``ConfigError``), or a failure during inference."""


class ConfigError(ModelError, ValueError):
    """A configuration keyword given to ``Detector`` is out of its range."""


from ._mask_detect import (  # noqa: E402  (the native module looks the classes above up)
    CONFIG_KEYS,
    Detection,
    Detector,
    Face,
    __version__,
)

__all__ = [
    "CONFIG_KEYS",
    "ConfigError",
    "Detection",
    "Detector",
    "Error",
    "Face",
    "ImageError",
    "MODELS_DIR",
    "ModelError",
    "__version__",
]
