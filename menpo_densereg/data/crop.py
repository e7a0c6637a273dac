"""Face crops: the one place that maps between an image and a network's input square.

Every learned model sees a square crop of side ``size`` centred on the face box and
enlarged by ``margin``. :func:`crop_face` returns the crop and the menpo transform that
maps crop coordinates (y, x) back to the original image, so shapes predicted in the crop
are returned in the image frame with ``transform.apply(shape)``.
"""

import numpy as np
from menpo.image import Image
from menpo.shape import PointCloud
from menpo.transform import Translation, UniformScale

__all__ = ["crop_face", "box_centre_and_side", "image_to_array"]


def box_centre_and_side(bounding_box):
    """Centre ``(y, x)`` and the side of the square that covers a box."""
    pts = bounding_box.points if isinstance(bounding_box, PointCloud) else bounding_box
    pts = np.asarray(pts, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise ValueError("bounding_box: expected finite (n, 2) (y, x) corner points")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    side = float((hi - lo).max())
    if side <= 1:
        raise ValueError(f"bounding_box: degenerate box of side {side:.2f} px")
    return (lo + hi) / 2.0, side


def crop_face(image, bounding_box, size, margin=0.25, order=1):
    """Square crop of ``image`` around ``bounding_box``, resized to ``size`` pixels.

    Parameters
    ----------
    image : `menpo.image.Image`
    bounding_box : `PointCloud` (e.g. a menpo ``bounding_box``)
    size : `int`
        Side of the output crop in pixels.
    margin : `float`
        Fraction of the box side added on every side.
    order : `int`
        Interpolation order (1 = bilinear).

    Returns
    -------
    crop : `menpo.image.Image`
        ``size x size`` crop (pixels outside the image are 0), landmarks carried over.
    crop_to_image : `menpo.transform.Homogeneous`
        Maps (y, x) points in the crop to the original image.
    """
    centre, side = box_centre_and_side(bounding_box)
    side = side * (1.0 + 2.0 * margin)
    scale = side / float(size)
    # crop (y, x) -> image (y, x): scale then translate so that the crop centre maps to
    # the box centre (pixel centres at integer coordinates)
    offset = centre - scale * (size - 1) / 2.0
    crop_to_image = UniformScale(scale, 2).compose_before(Translation(offset))
    crop = image.warp_to_shape((size, size), crop_to_image, order=order)
    return crop, crop_to_image


def image_to_array(image, grey=False):
    """Pixels of a menpo image as a float32 ``(C, H, W)`` array in [0, 1].

    Grey images are repeated to 3 channels unless ``grey`` is set, in which case RGB
    images are converted with luminosity weights.
    """
    if not isinstance(image, Image):
        raise TypeError(f"expected a menpo Image, got {type(image).__name__}")
    px = np.asarray(image.pixels, dtype=np.float32)
    if grey:
        if px.shape[0] == 3:
            px = (0.2989 * px[0] + 0.5870 * px[1] + 0.1140 * px[2])[None]
        return np.ascontiguousarray(px[:1])
    if px.shape[0] == 1:
        px = np.repeat(px, 3, axis=0)
    return np.ascontiguousarray(px[:3])
