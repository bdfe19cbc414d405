"""Type stubs for ``mask_detect`` (the native part is ``mask_detect._mask_detect``)."""

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Literal, Optional, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str
#: Directory of the models packaged with the module; ``Detector()`` loads from here.
MODELS_DIR: Path
#: The keyword arguments ``Detector`` accepts, in configuration order.
CONFIG_KEYS: List[str]

#: What ``Detector`` methods accept as an image: a path, encoded bytes, or a ``uint8`` array of
#: shape ``(H, W, 3)`` (RGB) or ``(H, W)`` (gray).
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, npt.NDArray[np.uint8]]

Label = Literal["mask", "no_mask"]
UncertainReason = Literal["small_face", "near_threshold"]
Category = Literal["no_face", "all_masked", "none_masked", "some_masked"]
#: ``"fast"``: one CenterFace run (the default). ``"accurate"``: three runs (the usual size, mirrored,
#: ``large_long_side``) and a fitted verifier deciding which candidates are faces; finds more of
#: the small faces at about three times the cost (ACCURACY.md).
Preset = Literal["fast", "accurate"]

class Error(Exception):
    """Base class of every error raised by the detector itself."""

class ImageError(Error, ValueError):
    """The image is not usable: empty, not a supported format, corrupt, or too large."""

class ModelError(Error):
    """A missing or corrupt model, an invalid configuration, or a failure during inference."""

class ConfigError(ModelError, ValueError):
    """A configuration keyword given to ``Detector`` is out of its range."""

class Face:
    """One face found in the image."""

    @property
    def box(self) -> Tuple[float, float, float, float]:
        """``(x1, y1, x2, y2)`` in pixels of the displayed image; x right, y down."""
    @property
    def score(self) -> float:
        """Face detector confidence in [0, 1]."""
    @property
    def landmarks(self) -> List[Tuple[float, float]]:
        """Left eye, right eye, nose, left and right mouth corner, ``(x, y)`` each."""
    @property
    def mask_probability(self) -> float:
        """Probability in [0, 1] that the face wears a mask."""
    @property
    def label(self) -> Label:
        """``"mask"`` when ``mask_probability`` reaches ``mask_threshold``, else ``"no_mask"``."""
    @property
    def uncertain(self) -> bool:
        """True when the label should not be trusted blindly."""
    @property
    def uncertain_reason(self) -> Optional[UncertainReason]:
        """Why the face is uncertain, or ``None``."""
    def to_dict(self) -> Dict[str, Any]:
        """The face as the JSON schema's ``dict``."""
    def __eq__(self, other: object) -> bool: ...

class Detection:
    """Everything found in one image; ``to_dict()`` / ``to_json()`` give the web API's schema."""

    @property
    def faces(self) -> List[Face]:
        """The faces, highest detector score first."""
    @property
    def category(self) -> Category:
        """The image-level verdict."""
    @property
    def num_faces(self) -> int: ...
    @property
    def num_masked(self) -> int: ...
    @property
    def num_unmasked(self) -> int: ...
    @property
    def width(self) -> int:
        """Image width in pixels (EXIF orientation applied)."""
    @property
    def height(self) -> int:
        """Image height in pixels (EXIF orientation applied)."""
    def to_dict(self) -> Dict[str, Any]:
        """The detection as the JSON schema's ``dict``."""
    def to_json(self, pretty: bool = False) -> str:
        """The detection as JSON text, exactly as the web API returns it."""
    @staticmethod
    def from_json(text: str) -> "Detection":
        """Read a detection from JSON text; ``ValueError`` if it does not match the schema."""
    @staticmethod
    def from_dict(data: Dict[str, Any]) -> "Detection":
        """Read a detection from a schema ``dict``; ``ValueError`` if it does not match."""
    def __eq__(self, other: object) -> bool: ...

class Detector:
    """Face-mask detector. Thread-safe; releases the GIL while it works."""

    def __init__(
        self,
        models_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        preset: Preset = ...,
        input_long_side: int = ...,
        face_threshold: float = ...,
        large_long_side: int = ...,
        candidate_threshold: float = ...,
        verifier: Union[str, "os.PathLike[str]"] = ...,
        verifier_threshold: float = ...,
        nms_iou: float = ...,
        min_face_size: float = ...,
        crop_margin: float = ...,
        mask_head: Union[str, "os.PathLike[str]"] = ...,
        mask_threshold: float = ...,
        uncertain_face_size: float = ...,
        uncertain_margin: float = ...,
        max_pixels: int = ...,
        max_side: int = ...,
        max_decode_alloc: int = ...,
        plan_cache_size: int = ...,
    ) -> None:
        """Load the models from ``models_dir`` (default: the packaged ``MODELS_DIR``).

        ``preset="accurate"`` finds more faces at about three times the cost; ``large_long_side``,
        ``candidate_threshold``, ``verifier`` (``"trained"`` or a verifier JSON path) and
        ``verifier_threshold`` apply to it only.

        Raises ``TypeError`` for an unknown keyword, ``ConfigError`` for an out-of-range value,
        ``ModelError`` for a missing or corrupt model.
        """
    @property
    def models_dir(self) -> Path:
        """The directory the models were loaded from."""
    @property
    def config(self) -> Dict[str, Union[int, float]]:
        """The configuration in effect, keyed like the constructor's keywords."""
    def detect(self, image: ImageInput) -> Detection:
        """Find the faces in ``image`` and classify each.

        Raises ``ImageError`` (undecodable or too large), ``OSError`` (unreadable path),
        ``TypeError`` / ``ValueError`` (wrong argument type, dtype or shape), ``ModelError``.
        """
    @overload
    def detect_many(
        self,
        images: Iterable[ImageInput],
        threads: Optional[int] = None,
        return_exceptions: Literal[False] = False,
    ) -> List[Detection]: ...
    @overload
    def detect_many(
        self,
        images: Iterable[ImageInput],
        threads: Optional[int] = None,
        return_exceptions: bool = ...,
    ) -> List[Union[Detection, BaseException]]: ...
    def annotate(self, image: ImageInput, detection: Detection) -> npt.NDArray[np.uint8]:
        """Draw ``detection`` onto a copy of ``image``; an ``(H, W, 3)`` RGB ``uint8`` array."""

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
