"""PNG overlays of dense ground truth: UV as colour, part labels, landmarks.

:func:`dense_overlay_figure` draws four panels: the image with its landmarks, (u, v) as
colour (u -> red, v -> green, blended over the image), the part labels and the depth.
It works on raw arrays, so real images (:class:`~menpo_densereg.template.groundtruth.DenseGroundTruth`)
and synthetic samples (the dense sample format) share it.
"""

import numpy as np

__all__ = ["uv_colour", "parts_colour", "dense_overlay_figure", "save_dense_overlay"]

_PART_COLOURS = (
    np.array(
        [
            [0, 0, 0],
            [230, 120, 30],
            [40, 160, 40],
            [210, 40, 40],
            [150, 100, 200],
            [140, 80, 70],
            [230, 120, 200],
            [130, 130, 130],
            [190, 190, 60],
        ],
        dtype=float,
    )
    / 255.0
)

_LM_COLOURS = {
    "ibug68": "#00ff00",
    "wflw98": "#ff00ff",
    "lfpw29": "#00ffff",
    "five": "#ffff00",
}


def uv_colour(u, v, mask):
    """``(H, W, 3)`` RGB: u -> red, v -> green, blue 0.3 on the face; black elsewhere."""
    rgb = np.stack([u, v, np.full_like(u, 0.3)], -1).astype(float)
    return rgb * np.asarray(mask, dtype=float)[..., None]


def parts_colour(parts):
    """``(H, W, 3)`` RGB colours of part labels."""
    return _PART_COLOURS[np.clip(np.asarray(parts), 0, len(_PART_COLOURS) - 1)]


def _hwc(image):
    img = np.asarray(image, dtype=float)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, -1)
    return np.clip(img, 0, 1)


def dense_overlay_figure(
    image, u, v, mask, parts, depth=None, landmarks=None, title=""
):
    """A matplotlib figure with the image + landmarks, UV, parts and depth panels.

    Parameters
    ----------
    image : ``(3, H, W)`` or ``(H, W, 3)`` `ndarray` in [0, 1]
    u, v, mask, parts, depth : ``(H, W)`` `ndarray`
    landmarks : `dict` of name -> ``(n, 2)`` (y, x) `ndarray` or ``((n, 2), visible)``
    title : `str`
    """
    import matplotlib.pyplot as plt  # the backend is the caller's choice

    img = _hwc(image)
    m = np.asarray(mask, dtype=bool)
    n_panels = 4 if depth is not None else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(3.2 * n_panels, 3.4))
    axes[0].imshow(img)
    for name, pts in (landmarks or {}).items():
        vis = None
        if isinstance(pts, tuple):
            pts, vis = pts
        pts = np.asarray(pts)
        if vis is None:
            vis = np.ones(len(pts), bool)
        vis = np.asarray(vis) > 0.5
        c = _LM_COLOURS.get(name, "#00ff00")
        axes[0].scatter(pts[vis, 1], pts[vis, 0], s=6, c=c, label=name, linewidths=0)
        axes[0].scatter(
            pts[~vis, 1],
            pts[~vis, 0],
            s=8,
            facecolors="none",
            edgecolors=c,
            linewidths=0.6,
        )
    if landmarks:
        axes[0].legend(fontsize=5, loc="lower right", markerscale=1.5)
    axes[0].set_title("image + landmarks (o: hidden)", fontsize=7)
    a = 0.65
    axes[1].imshow(img * (1 - a * m[..., None]) + a * uv_colour(u, v, m))
    axes[1].contour(
        np.where(m, u, np.nan), levels=np.linspace(0, 1, 11), colors="w", linewidths=0.3
    )
    axes[1].contour(
        np.where(m, v, np.nan), levels=np.linspace(0, 1, 11), colors="w", linewidths=0.3
    )
    axes[1].set_title("(u, v): u red, v green", fontsize=7)
    axes[2].imshow(
        img * (1 - a * m[..., None]) + a * parts_colour(parts) * m[..., None]
    )
    axes[2].set_title("parts", fontsize=7)
    if depth is not None:
        axes[3].imshow(np.where(m, depth, np.nan), cmap="viridis", vmin=0, vmax=1)
        axes[3].set_title("depth Z", fontsize=7)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def save_dense_overlay(
    path, image, u, v, mask, parts, depth=None, landmarks=None, title=""
):
    """Draw :func:`dense_overlay_figure` and save it atomically as a PNG."""
    import matplotlib.pyplot as plt

    from menpo_densereg.atomic import atomic_save_figure

    fig = dense_overlay_figure(image, u, v, mask, parts, depth, landmarks, title)
    try:
        atomic_save_figure(fig, path)
    finally:
        plt.close(fig)
