"""Optional face-identity preservation with dlib's face-recognition ResNet (the FVA idea).

Install with ``pip install 'cfe[faces]'``: ``dlib-bin`` (dlib's Python binding, prebuilt) and
``face-recognition-models`` (dlib's model files: the 29-layer ResNet that maps an aligned
150×150 face chip to a 128-d descriptor, and the 5-point landmark predictor). Nothing is
downloaded at run time.

Two faces are "the same person" for dlib when their descriptors are closer than 0.6
(dlib's documented threshold, 99.38 % on LFW). The face verification accuracy (FVA) of a
counterfactual explainer is the share of counterfactuals whose descriptor stays within 0.6
of its source's — a counterfactual should change the attribute, not the person.

Faces are found once per source: dlib's HOG frontal-face detector on the source (upsampled
to 256²); where it finds none (aligned 64² CelebA crops are small and tight) the median box
it finds on aligned CelebA crops is used. The counterfactual is read in its source's box, so
both descriptors come from the same place; the 5-point landmarks are fitted on each image.

Example:
    >>> from cfe_cli.identity import FaceIdentity      # doctest: +SKIP
    >>> fid = FaceIdentity()                           # doctest: +SKIP
    >>> d = fid.distance(x_source, x_cf)               # (B,) descriptor distances
    >>> fva = (d < fid.threshold).float().mean()
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cfe_cli.errors import InputError

__all__ = ["available", "FaceIdentity", "MISSING_MESSAGE", "SAME_PERSON"]

MISSING_MESSAGE = ("face identity needs the optional packages dlib-bin and face-recognition-models: "
                   "pip install 'cfe[faces]'")
SAME_PERSON = 0.6  # dlib's same-person distance
_SIZE = 256  # faces are upsampled to this side before detection and landmarks
# median HOG-detector box on aligned CelebA crops (centre crop, 256² after upsampling)
_DEFAULT_BOX = (0.137, 0.367, 0.836, 0.992)  # left, top, right, bottom as fractions of the side


def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    # read the files directly: the package's __init__ imports pkg_resources, gone from new setuptools
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def available() -> bool:
    """Whether dlib and the model files are installed."""
    d = _models_dir()
    return (importlib.util.find_spec("dlib") is not None and d is not None
            and (d / "dlib_face_recognition_resnet_model_v1.dat").is_file()
            and (d / "shape_predictor_5_face_landmarks.dat").is_file())


class FaceIdentity:
    """dlib face descriptors for batches of RGB face images in [0, 1].

    Args:
        threshold: same-person distance (dlib's 0.6).
    """

    def __init__(self, threshold: float = SAME_PERSON) -> None:
        if not available():
            raise InputError(MISSING_MESSAGE)
        import dlib

        d = _models_dir()
        assert d is not None
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))
        self.threshold = threshold

    @staticmethod
    def _to_uint8(x: torch.Tensor) -> np.ndarray:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, 256, 256, 3)`` uint8 (one batched resize)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"face identity needs RGB images (B, 3, H, W), got {tuple(x.shape)}")
        up = F.interpolate(x.detach().float().cpu(), size=(_SIZE, _SIZE), mode="bicubic", align_corners=False)
        return np.ascontiguousarray((up.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))

    def _boxes(self, imgs: np.ndarray) -> list[tuple[int, int, int, int]]:
        out = []
        default = tuple(int(round(v * _SIZE)) for v in _DEFAULT_BOX)
        for im in imgs:  # dlib's HOG detector takes one image at a time
            dets = self.detector(im, 0)
            if len(dets):
                r = max(dets, key=lambda r: r.area())
                out.append((r.left(), r.top(), r.right(), r.bottom()))
            else:
                out.append(default)  # type: ignore[arg-type]
        return out

    def _descriptors(self, imgs: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
        dlib = self._dlib
        batch_faces = []
        for im, (left, top, right, bottom) in zip(imgs, boxes, strict=True):
            faces = dlib.full_object_detections()
            faces.append(self.landmarks(im, dlib.rectangle(left, top, right, bottom)))
            batch_faces.append(faces)
        vecs = self.net.compute_face_descriptor(list(imgs), batch_faces)  # one batched call
        return torch.tensor(np.array([np.array(v[0]) for v in vecs]), dtype=torch.float32)

    def boxes(self, x: torch.Tensor) -> list[tuple[int, int, int, int]]:
        """One face box per image: the largest detection, else the CelebA default box."""
        return self._boxes(self._to_uint8(x))

    def descriptors(self, x: torch.Tensor, boxes: list[tuple[int, int, int, int]] | None = None) -> torch.Tensor:
        """128-d dlib descriptors ``(B, 128)``; ``boxes`` default to :meth:`boxes` of ``x``."""
        imgs = self._to_uint8(x)
        return self._descriptors(imgs, boxes if boxes is not None else self._boxes(imgs))

    def distance(self, x_source: torch.Tensor, x_other: torch.Tensor) -> torch.Tensor:
        """Descriptor distance of each pair ``(B,)``; the other image is read in its source's box."""
        src = self._to_uint8(x_source)
        boxes = self._boxes(src)
        return (self._descriptors(src, boxes) - self._descriptors(self._to_uint8(x_other), boxes)).norm(dim=1)
