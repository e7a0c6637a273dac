"""Video input and output: mp4/avi files (PyAV, ffmpeg inside the wheel) and frame folders.

- :func:`iter_frames` / :func:`read_video` read a video file (anything ffmpeg decodes)
  or a folder of frames (the 300VW layout ``clip/imgs/000001.jpg`` ..., or ``clip/frames/``,
  or images directly in the folder) into float32 menpo images in [0, 1].
- :class:`VideoError` is raised for a missing, corrupt or truncated video; it says which
  file and after how many frames, and keeps the frames read so far
  (``error.frames`` for :func:`read_video`; :func:`iter_frames` has yielded them).
- :class:`VideoWriter` writes an H.264 (or MPEG-4) video atomically;
  :func:`draw_overlay` draws landmarks, the box and a caption on a frame;
  :func:`write_300vw` writes landmarks in the 300VW layout (``annot/000001.pts`` ...).
"""

from pathlib import Path

import numpy as np
from menpo.image import Image

from menpo_densereg.data.readers import (
    IMAGE_EXTENSIONS,
    DatasetError,
    read_image,
    write_pts,
)

__all__ = [
    "VideoError",
    "VIDEO_HINT",
    "video_info",
    "iter_frames",
    "read_video",
    "frame_to_image",
    "image_to_rgb8",
    "VideoWriter",
    "draw_overlay",
    "write_300vw",
]

VIDEO_HINT = (
    "reading and writing video needs PyAV: pip install 'menpo-densereg[video]' (av)"
)


class VideoError(ValueError):
    """A video that cannot be read (completely).

    Attributes
    ----------
    path : `Path`
    frames_read : `int`
        Frames decoded before the error.
    frames : `list` of `menpo.image.Image`
        The frames read so far (filled by :func:`read_video`; empty for
        :func:`iter_frames`, whose caller already has them).
    result : object or `None`
        Set by :meth:`menpo_densereg.tracking.Tracker.track` to the partial tracking.
    """

    def __init__(self, path, message, frames_read=0, frames=None):
        super().__init__(f"{path}: {message} (after {frames_read} frames)")
        self.path = Path(path)
        self.frames_read = int(frames_read)
        self.frames = list(frames or [])
        self.result = None


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is in install_requires
        raise ImportError(f"{VIDEO_HINT} ({e})") from None
    return av


def _frame_files(folder):
    folder = Path(folder)
    for sub in (folder / "imgs", folder / "frames", folder):
        if sub.is_dir():
            files = [
                p
                for p in sub.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            ]
            if files:
                return sorted(
                    files,
                    key=lambda p: (int(p.stem) if p.stem.isdigit() else 0, p.name),
                )
    return []


def video_info(path):
    """Frame count, frame rate and size of a video file or frame folder.

    Returns
    -------
    info : `dict`
        ``n_frames`` (as declared by the container; 0 when unknown), ``fps`` (30 for
        frame folders, which do not say), ``width``, ``height``.
    """
    path = Path(path)
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise VideoError(path, "no frames (imgs/*.jpg, frames/* or images)")
        import PIL.Image

        with PIL.Image.open(files[0]) as im:
            w, h = im.size
        return {"n_frames": len(files), "fps": 30.0, "width": w, "height": h}
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    av = _av()
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError(path, "no video stream")
            s = c.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 30.0)
            return {
                "n_frames": int(s.frames or 0),
                "fps": fps,
                "width": s.codec_context.width,
                "height": s.codec_context.height,
            }
    except av.error.FFmpegError as e:
        raise VideoError(path, f"unreadable video ({e})") from None


def frame_to_image(rgb):
    """An ``(h, w, 3)`` uint8 RGB array as a float32 menpo `Image` in [0, 1]."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"frame: expected (h, w, 3) uint8, got {arr.shape} {arr.dtype}"
        )
    pixels = np.empty((3,) + arr.shape[:2], dtype=np.float32)
    np.multiply(np.moveaxis(arr, -1, 0), np.float32(1 / 255.0), out=pixels)
    return Image(pixels, copy=False)


def image_to_rgb8(image):
    """A menpo image (grey or RGB, floats in [0, 1]) as ``(h, w, 3)`` uint8 RGB."""
    px = np.asarray(image.pixels)
    if px.shape[0] == 1:
        px = np.repeat(px, 3, axis=0)
    return np.ascontiguousarray(
        (np.clip(np.moveaxis(px[:3], 0, -1), 0, 1) * 255 + 0.5).astype(np.uint8)
    )


def iter_frames(path, start=0, stop=None, step=1, size=None):
    """Yield the frames of a video file or frame folder as float32 menpo images.

    Each image has ``frame`` (0-based index in the video) and, for folders, ``path``.

    Parameters
    ----------
    path : `str` or `Path`
        A video file (mp4, avi, ... anything ffmpeg decodes) or a folder of frames.
    start, stop, step : `int`
        Frames ``range(start, stop, step)`` of the video (``stop=None``: to the end).
    size : ``(width, height)``, optional
        Resize every frame (video files only; e.g. ``(640, 480)``).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    VideoError
        Not a video, undecodable data, or fewer frames than the container declares
        (truncated file). Raised where it happens: the frames before it were yielded.
    """
    path = Path(path)
    if step < 1 or start < 0:
        raise ValueError(
            f"start/step: need start >= 0 and step >= 1, got {start}/{step}"
        )
    if path.is_dir():
        yield from _iter_folder(path, start, stop, step)
        return
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    av = _av()
    n = 0  # frames decoded
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise VideoError(path, f"unreadable video ({e})") from None
    with container:
        if not container.streams.video:
            raise VideoError(path, "no video stream")
        stream = container.streams.video[0]
        declared = int(stream.frames or 0)
        try:
            for frame in _decode(av, container, stream):
                i = n
                n += 1
                if stop is not None and i >= stop:
                    return
                if i < start or (i - start) % step:
                    continue
                if size is not None:
                    frame = frame.reformat(width=size[0], height=size[1])
                image = frame_to_image(frame.to_ndarray(format="rgb24"))
                image.frame = i
                yield image
        except av.error.FFmpegError as e:
            raise VideoError(path, f"corrupt video data ({e})", n) from None
    if declared and n < declared and (stop is None or n < stop):
        raise VideoError(path, f"truncated: decoded {n} of {declared} frames", n)


def _decode(av, container, stream):
    """Decoded frames, packet by packet; at a bad packet, the frames the decoder still
    holds (B-frame delay) come out before the error is raised."""
    error = None
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
            frames = packet.decode()
        except StopIteration:
            return
        except av.error.FFmpegError as e:
            error = e
            break
        yield from frames
    try:
        yield from stream.codec_context.decode(None)
    except av.error.FFmpegError:
        pass
    raise error


def _iter_folder(path, start, stop, step):
    files = _frame_files(path)
    if not files:
        raise VideoError(path, "no frames (imgs/*.jpg, frames/* or images)")
    for i in range(start, len(files) if stop is None else min(stop, len(files)), step):
        try:
            image = read_image(files[i])
        except DatasetError as e:
            raise VideoError(path, f"frame {files[i].name}: {e}", i) from None
        if image.n_channels == 1:
            image = Image(np.repeat(image.pixels, 3, axis=0), copy=False)
            image.path = files[i]
        image.frame = i
        yield image


def read_video(path, start=0, stop=None, step=1, size=None):
    """All frames of :func:`iter_frames` in a list.

    Raises
    ------
    VideoError
        As :func:`iter_frames`; ``error.frames`` holds the frames read before it.
    """
    frames = []
    try:
        for image in iter_frames(path, start, stop, step, size):
            frames.append(image)
    except VideoError as e:
        e.frames = frames
        raise
    return frames


class VideoWriter:
    """Write RGB frames to a video file, atomically (the file appears when closed).

    Parameters
    ----------
    path : `str` or `Path`
        Output file (``.mp4``, ``.avi``, ``.mkv``).
    fps : `float`
    codec : `str`
        ``"libx264"`` (H.264, default) or ``"mpeg4"``; both ship inside PyAV's wheel.

    Frames of odd size are padded by one pixel (yuv420p needs even sizes). Use as a
    context manager; on an exception the partial file is removed, and a writer that
    got no frame leaves no file.
    """

    def __init__(self, path, fps=30.0, codec="libx264"):
        from fractions import Fraction

        from menpo_densereg.atomic import atomic_path

        self.path = Path(path)
        self.fps = Fraction(float(fps)).limit_denominator(1001)
        self.codec = codec
        self._atomic = atomic_path(self.path)
        self._container = None
        self._stream = None
        self.n_frames = 0

    def __enter__(self):
        av = _av()
        tmp = self._atomic.__enter__()
        fmt = {".avi": "avi", ".mkv": "matroska"}.get(self.path.suffix.lower(), "mp4")
        # mp4: the index (moov) in front, so players start before the end arrives
        opts = {"movflags": "faststart"} if fmt == "mp4" else {}
        self._container = av.open(str(tmp), mode="w", format=fmt, options=opts)
        return self

    def write(self, rgb):
        """Append one ``(h, w, 3)`` uint8 frame (all frames of one size)."""
        av = _av()
        arr = np.asarray(rgb, dtype=np.uint8)
        h, w = arr.shape[:2]
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            h, w = arr.shape[:2]
        if self._stream is None:
            self._stream = self._container.add_stream(self.codec, rate=self.fps)
            self._stream.width, self._stream.height = w, h
            self._stream.pix_fmt = "yuv420p"
            if self.codec == "libx264":
                self._stream.options = {"preset": "veryfast", "crf": "23"}
        elif (h, w) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"{self.path}: frame {self.n_frames} is {w}x{h}, the video "
                f"{self._stream.width}x{self._stream.height}"
            )
        frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.n_frames += 1

    def __exit__(self, exc_type, exc, tb):
        empty = self._stream is None
        try:
            if exc_type is None and not empty:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
        finally:
            if exc_type is None and empty:  # no frame: leave no (empty) file
                err = ValueError(f"{self.path}: no frames written")
                self._atomic.__exit__(ValueError, err, None)
            else:
                self._atomic.__exit__(exc_type, exc, tb)
        return False


STATE_COLOURS = {
    "detected": (255, 220, 0),
    "redetected": (255, 140, 0),
    "tracked": (0, 230, 0),
    "lost": (230, 0, 0),
}


def draw_overlay(image, shape=None, box=None, caption=None, state="tracked"):
    """A frame with its landmarks, box and caption drawn (``(h, w, 3)`` uint8).

    Parameters
    ----------
    image : `menpo.image.Image` or ``(h, w, 3)`` uint8 array
    shape : `PointCloud`, optional
        Landmarks (y, x).
    box : `PointCloud`, optional
        Face box.
    caption : `str`, optional
        Text drawn at the top-left.
    state : `str`
        Colours the box and caption (tracked green, re-detected orange, lost red).
    """
    import PIL.Image
    import PIL.ImageDraw

    rgb = image if isinstance(image, np.ndarray) else image_to_rgb8(image)
    im = PIL.Image.fromarray(rgb)
    draw = PIL.ImageDraw.Draw(im)
    colour = STATE_COLOURS.get(state, (255, 255, 255))
    lw = max(1, int(round(max(im.size) / 400)))
    if box is not None:
        (t, l), (b, r) = box.points.min(0), box.points.max(0)
        draw.rectangle([l, t, r, b], outline=colour, width=lw)
    if shape is not None:
        rad = max(1.5, max(im.size) / 300)
        for y, x in np.asarray(shape.points):
            if np.isfinite(y) and np.isfinite(x):
                draw.ellipse(
                    [x - rad, y - rad, x + rad, y + rad],
                    fill=(0, 255, 0),
                    outline=(0, 0, 0),
                )
    if caption:
        draw.rectangle([0, 0, 8 + 6 * len(caption), 14], fill=(0, 0, 0))
        draw.text((4, 2), caption, fill=colour)
    return np.asarray(im)


def write_300vw(folder, shapes, first=1):
    """Write landmarks in the 300VW layout: ``folder/annot/000001.pts`` ...

    Parameters
    ----------
    folder : `str` or `Path`
    shapes : sequence of `PointCloud` or `None`
        One per frame; frames with `None` (lost) get no file.
    first : `int`
        Number of the first frame's file (300VW counts from 1).

    Returns
    -------
    paths : `list` of `Path`
    """
    annot = Path(folder) / "annot"
    annot.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, shape in enumerate(shapes):
        if shape is None:
            continue
        p = annot / f"{first + i:06d}.pts"
        write_pts(p, shape)
        paths.append(p)
    return paths
