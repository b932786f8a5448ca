"""Built-in photographic styles: OpenCV filters turn each photo into its own paired target
(colour-dodge pencil, mean-shift washes, and Gastal & Oliveira's edge-preserving filter for the
oil's smooth paint and the cartoon's flat colours).

Filter sizes are tuned for a 256 px portrait and scaled with the image, so a style looks the
same at every training resolution.
"""

from __future__ import annotations

import cv2
import numpy as np


def _odd(x: float, low: int = 3) -> int:
    return max(low, int(round(x)) | 1)


def _saturate(bgr: np.ndarray, factor: float) -> np.ndarray:
    """BGR uint8 with HSV saturation times `factor` (capped), as float32."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 1] = np.minimum(hsv[..., 1] * factor, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)


def _sketch(bgr: np.ndarray, k: float) -> np.ndarray:
    # Colour-dodge pencil sketch: the grey image divided by a blur of its negative is near
    # white where the picture is flat and dark only along edges and shadows, i.e. pencil on
    # light paper. (OpenCV's pencilSketch shades faces with dark noisy hatching instead.)
    # The light pre-blur keeps JPEG noise from turning into speckle; gamma 2 darkens strokes.
    gray = cv2.GaussianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), (0, 0), k)
    dodge = cv2.divide(gray, 255 - cv2.GaussianBlur(255 - gray, (0, 0), 6 * k), scale=256)
    pencil = np.clip(255 * (dodge / 255.0) ** 2, 0, 255).astype(np.uint8)
    return cv2.cvtColor(pencil, cv2.COLOR_GRAY2BGR)


def _watercolor(bgr: np.ndarray, k: float) -> np.ndarray:
    # Flat washes (mean shift), softened, a little more saturated, pigment pooled where washes
    # meet, and the whole laid translucently on white paper. (OpenCV's stylization draws black
    # ink outlines: it reads as a comic, not a watercolour.)
    wash = cv2.GaussianBlur(cv2.pyrMeanShiftFiltering(bgr, 5 * k, 30), (0, 0), 0.5 * k)
    wash = _saturate(wash, 1.4)
    gray = cv2.cvtColor(wash.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    rim = np.clip(np.abs(gray - cv2.GaussianBlur(gray, (0, 0), 1.5 * k)) / 30, 0, 1)
    paint = wash * (1 - 0.7 * rim)[..., None]
    return np.clip(255 - 0.85 * (255 - paint), 0, 255).astype(np.uint8)


def _oil(bgr: np.ndarray, k: float) -> np.ndarray:
    # Flat, saturated paint with impasto: Gastal & Oliveira's recursive edge-preserving filter lays
    # skin and sky in smooth fields of colour, saturation x1.5, and the paint's luma, blurred, is lit
    # from the upper left as a height map, so strokes stand out along edges. Every step is a smooth
    # function of the photo, so a generator can learn it: xphoto's oilPainting (the oil until
    # 2026-12-03) is a mode filter whose patch borders flip under noise, and generators trained on
    # it learned little more than a blur (docs/results.md, "The oil style").
    paint = cv2.edgePreservingFilter(bgr, flags=cv2.RECURS_FILTER, sigma_s=min(200.0, 40 * k), sigma_r=0.4)
    paint = _saturate(paint, 1.5)
    height = cv2.GaussianBlur(cv2.cvtColor(paint, cv2.COLOR_BGR2GRAY) / 255, (0, 0), 1.2 * k)
    slope = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) + cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3)
    return np.clip(paint * (1 - 2 * k * slope)[..., None], 0, 255).astype(np.uint8)


def _cartoon(bgr: np.ndarray, k: float) -> np.ndarray:
    smooth = cv2.edgePreservingFilter(bgr, flags=cv2.RECURS_FILTER, sigma_s=min(200.0, 60 * k), sigma_r=0.4)
    gray = cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), _odd(5 * k))
    edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, _odd(9 * k), 5)
    return cv2.bitwise_and(smooth, smooth, mask=edges)


FILTERS = {"sketch": _sketch, "watercolor": _watercolor, "oil": _oil, "cartoon": _cartoon}


def apply_style(name: str, rgb: np.ndarray) -> np.ndarray:
    """Return the built-in style `name` of an RGB uint8 HxWx3 image, same shape and dtype."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    k = min(rgb.shape[:2]) / 256
    return np.ascontiguousarray(FILTERS[name](bgr, k)[:, :, ::-1])
