"""Features for patch AAMs: menpo's menu plus :func:`orient_hist`.

``cyvlfeat`` (menpo's ``dsift`` / ``fast_dsift``) is not available on this stack, so the
feature menu is menpo's ``no_op``, ``igo``, ``double_igo``, ``gradient`` and
:func:`orient_hist` (a dense soft-binned gradient-orientation histogram written here: a
cheap SIFT-like descriptor, 8 channels).
"""

import numpy as np

__all__ = [
    "FEATURES",
    "NORMALISATIONS",
    "feature_functions",
    "orient_hist",
]


def orient_hist(image, n_bins=8, sigma=1.5):
    """Dense gradient-orientation histogram feature (SIFT-like, ``n_bins`` channels).

    Gradient magnitudes are soft-assigned (linear interpolation between the two nearest
    bins) to ``n_bins`` signed orientation bins over the full circle, and each
    orientation channel is Gaussian-smoothed, like the per-pixel stage of dense SIFT;
    the channels are then L2-normalised per pixel (robust to illumination changes).

    Parameters
    ----------
    image : `menpo.image.Image`
    n_bins : `int`
    sigma : `float`
        Gaussian pooling in pixels.
    """
    from scipy.ndimage import gaussian_filter

    px = image.pixels
    grey = px.mean(axis=0) if px.shape[0] > 1 else px[0]
    gy, gx = np.gradient(grey.astype(np.float64))
    mag = np.hypot(gy, gx)
    ang = np.arctan2(gy, gx) % (2 * np.pi)
    pos = ang / (2 * np.pi) * n_bins
    lo = np.floor(pos).astype(int) % n_bins
    w_hi = pos - np.floor(pos)
    out = np.zeros((n_bins,) + grey.shape)
    for b in range(n_bins):
        chan = mag * ((lo == b) * (1 - w_hi) + (((lo + 1) % n_bins) == b) * w_hi)
        out[b] = gaussian_filter(chan, sigma)
    out /= np.sqrt((out**2).sum(axis=0, keepdims=True)) + 1e-3
    res = image.copy()
    res.pixels = out
    return res


def feature_functions():
    from menpo.feature import double_igo, gradient, igo, no_op, normalize_norm
    from menpo.feature import normalize_std

    return {
        "no_op": no_op,
        "igo": igo,
        "double_igo": double_igo,
        "gradient": gradient,
        "orient_hist": orient_hist,
        "normalize_norm": normalize_norm,
        "normalize_std": normalize_std,
    }


FEATURES = ("no_op", "igo", "double_igo", "gradient", "orient_hist")
NORMALISATIONS = ("no_op", "normalize_norm", "normalize_std")
