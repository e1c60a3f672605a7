"""Pictures: skeletons drawn on the image, and a debug figure of heatmaps and tags."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from efficienthrnet.keypoints import KeypointSchema, get_schema


def person_colours(n: int) -> np.ndarray:
    """n distinct RGB uint8 colours (evenly spaced hues, full saturation)."""
    hues = (np.arange(n) * 180 / max(n, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 230, np.uint8), np.full(n, 255, np.uint8)], axis=-1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def draw_people(
    image: np.ndarray,
    keypoints: np.ndarray,
    schema: KeypointSchema | str = "coco17",
    min_score: float = 0.1,
    scores: np.ndarray | None = None,
    min_person_score: float = 0.0,
) -> np.ndarray:
    """Return a copy of the uint8 RGB image with each person's skeleton in its own colour.

    keypoints: [P, J, 3] (x, y, score) in image pixels (pixel i spans [i, i + 1)); joints with
    score < min_score are left out, and so are people whose score is below min_person_score.
    """
    schema = get_schema(schema)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (schema.num_keypoints, 3):
        raise ValueError(f"keypoints must be [P, {schema.num_keypoints}, 3]; got shape {keypoints.shape}")
    canvas = np.ascontiguousarray(image.copy())
    thickness = max(1, round(min(image.shape[:2]) / 200))
    for p, (person, colour) in enumerate(zip(keypoints, person_colours(len(keypoints)))):
        if scores is not None and scores[p] < min_person_score:
            continue
        colour = tuple(int(c) for c in colour)
        # Pixel centres sit at i + 0.5; cv2 draws at integer pixel indices.
        points = [(int(round(x - 0.5)), int(round(y - 0.5))) for x, y, _ in person]
        shown = person[:, 2] >= min_score
        for a, b in schema.skeleton:
            if shown[a] and shown[b]:
                cv2.line(canvas, points[a], points[b], colour, thickness, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            cv2.circle(canvas, points[k], thickness + 1, colour, -1, cv2.LINE_AA)
    return canvas


def save_people_png(path: str | os.PathLike, image: np.ndarray, keypoints: np.ndarray, **kwargs) -> Path:
    """Draw the skeletons (see `draw_people`) and write an RGB PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drawn = draw_people(image, keypoints, **kwargs)
    if not cv2.imwrite(str(path), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}; check the folder and the .png suffix")
    return path


def debug_figure(image: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray, keypoints: np.ndarray | None = None):
    """Matplotlib figure: image, max-over-joints heatmap overlaid on it, and the tag map.

    heatmaps [h, w, J] and tags [h, w, J] or [h, w, J, T] are map-resolution arrays; the
    tag panel shows, per pixel, the tag of the joint with the highest heatmap there.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    heatmaps = np.asarray(heatmaps, np.float32)
    tags = np.asarray(tags, np.float32)
    if tags.ndim == 4:
        tags = tags[..., 0]
    h, w = image.shape[:2]
    peak = heatmaps.max(axis=-1)
    strongest = heatmaps.argmax(axis=-1)
    tag_of_strongest = np.take_along_axis(tags, strongest[..., None], axis=-1)[..., 0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    axes[0].imshow(image)
    axes[0].set_title("image" if keypoints is None else "image + people")
    if keypoints is not None:
        axes[0].imshow(draw_people(image, keypoints))
    axes[1].imshow(image)
    axes[1].imshow(cv2.resize(peak, (w, h)), alpha=0.6, cmap="magma", vmin=0, vmax=max(1e-6, float(peak.max())))
    axes[1].set_title("heatmaps (max over joints)")
    shown = axes[2].imshow(np.where(peak > 0.1, tag_of_strongest, np.nan), cmap="turbo")
    axes[2].set_title("tag of the strongest joint (heatmap > 0.1)")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def save_debug_png(path: str | os.PathLike, image, heatmaps, tags, keypoints=None) -> Path:
    """Write `debug_figure` to a PNG; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = debug_figure(image, heatmaps, tags, keypoints)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
