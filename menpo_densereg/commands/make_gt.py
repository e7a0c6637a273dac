"""``menpo-densereg make-gt``: dense ground truth (u, v, depth, mask, parts) for a folder.

Faces (68 points, or 98 converted to 68) are fitted with the 3D face template and
z-buffer rasterised; with ``--ears``, 55-point ears get the reference-ear TPS space, the
reference being built from the folder's own ear annotations (saved as ``ear_space.json``).
Writes one ``<name>.npz`` per image (``u, v, depth, mask, parts`` at the image's size plus
the landmarks) and, with ``--overlays``, a PNG overlay per image. Prints how far the
template's landmarks, looked up in the rasterised (u, v) field, land from the annotations.
"""

import json
from pathlib import Path

import numpy as np

__all__ = ["configure_parser", "run"]


def configure_parser(parser):
    parser.add_argument("folder", type=Path, help="folder of images + .pts (recursive)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--ears", action="store_true", help="also 55-point ear images")
    parser.add_argument("--overlays", action="store_true", help="write PNG overlays")
    parser.add_argument("--no-progress", action="store_true")


def _stem(image, root):
    p = Path(getattr(image, "path", "image"))
    try:
        rel = p.relative_to(root)
    except ValueError:
        rel = Path(p.name)
    return "__".join(rel.with_suffix("").parts)


def _crop_window(mask, pts, shape, pad=0.15):
    ys, xs = np.nonzero(mask)
    lo = np.array([ys.min(), xs.min()]) if len(ys) else pts.min(0)
    hi = np.array([ys.max(), xs.max()]) if len(ys) else pts.max(0)
    lo, hi = np.minimum(lo, pts.min(0)), np.maximum(hi, pts.max(0))
    m = pad * (hi - lo).max()
    lo = np.clip(np.floor(lo - m), 0, None).astype(int)
    hi = np.minimum(np.ceil(hi + m).astype(int), np.array(shape) - 1)
    return lo, (slice(lo[0], hi[0] + 1), slice(lo[1], hi[1] + 1))


def _save(path, gt, landmarks, extra):
    from menpo_densereg.atomic import atomic_path

    arrays = dict(
        u=gt.u,
        v=gt.v,
        depth=gt.depth,
        mask=gt.mask,
        parts=gt.parts.astype(np.uint8),
        landmarks=np.asarray(landmarks, np.float32),
    )
    arrays.update(extra)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def _overlay(path, image, gt, pts, title, depth=True):
    from menpo_densereg.template.overlays import save_dense_overlay

    lo, win = _crop_window(gt.mask, pts, gt.shape)
    px = np.asarray(image.pixels)[(slice(None),) + win]
    save_dense_overlay(
        path,
        px,
        gt.u[win],
        gt.v[win],
        gt.mask[win],
        gt.parts[win],
        gt.depth[win] if depth else None,
        {"ibug68" if len(pts) == 68 else "ear55": pts - lo},
        title=title,
    )


def _summary(name, errors):
    e = np.concatenate(errors) if errors else np.zeros(0)
    found = e[np.isfinite(e)]
    if len(found) == 0:
        return f"{name}: no landmark looked up"
    return (
        f"{name}: landmark look-up in the (u, v) field vs annotation: median "
        f"{np.median(found):.2f} px, p95 {np.percentile(found, 95):.2f} px, max "
        f"{found.max():.2f} px over {len(found)} points ({len(e) - len(found)} not found)"
    )


def run(args):
    from tqdm import tqdm

    from menpo_densereg.template.ears import EarSpace, ear_dense_ground_truth
    from menpo_densereg.template.groundtruth import landmarks_from_uv, rasterise
    from menpo_densereg.data.readers import read_pts_folder
    from menpo_densereg.template.synthesis import annotated_face

    images = read_pts_folder(
        args.folder, on_error="skip", progress=not args.no_progress
    )
    for path, reason in images.bad:
        print(f"skipped {path}: {reason}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    faces = [
        im
        for im in images
        if im.landmarks.n_groups
        and im.landmarks[im.landmarks.group_labels[0]].n_points in (68, 98)
    ]
    ears = [
        im
        for im in images
        if im.landmarks.n_groups
        and im.landmarks[im.landmarks.group_labels[0]].n_points == 55
    ]
    others = len(images) - len(faces) - len(ears)
    if others:
        print(
            f"{others} images with other markups skipped (dense GT needs 68/98 or 55 points)"
        )
    if not faces and not (args.ears and ears):
        raise ValueError(
            f"{args.folder}: no 68/98-point face images"
            + ("" if args.ears else " (use --ears for 55-point ears)")
        )
    face_err, face_fixed, reproj, n_written = [], [], [], 0
    for im in tqdm(faces, desc="faces", disable=args.no_progress):
        stem = _stem(im, args.folder)
        try:
            face = annotated_face(im)
        except ValueError as e:
            print(f"skipped {stem}: {e}")
            continue
        fit = face.fit
        gt = rasterise(fit, im.shape)
        pts68 = fit.shape68
        found_pts, _ = landmarks_from_uv(gt.u, gt.v, gt.mask, fit.landmark_uv())
        e = np.linalg.norm(found_pts - pts68, axis=1)
        face_err.append(e)
        fixed_pts, _ = landmarks_from_uv(
            gt.u, gt.v, gt.mask, fit.template.landmark_uv("68")
        )
        face_fixed.append(np.linalg.norm(fixed_pts - pts68, axis=1))
        reproj.append(fit.reprojection_error)
        yaw, pitch, roll = fit.yaw_pitch_roll
        _save(
            out / f"{stem}.npz",
            gt,
            pts68,
            dict(
                rotation=fit.rotation,
                scale=np.float64(fit.scale),
                pose=np.array([yaw, pitch, roll]),
                reprojection_error=np.float64(fit.reprojection_error),
                landmark_uv=fit.landmark_uv(),
            ),
        )
        if args.overlays:
            _overlay(
                out / f"{stem}.png",
                im,
                gt,
                pts68,
                f"{stem}: yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}, "
                f"look-up median {np.nanmedian(e):.2f} px",
            )
        n_written += 1
    print(f"wrote dense ground truth for {n_written}/{len(faces)} face images to {out}")
    if faces:
        print(
            f"template fit (rigid) reprojection error: median {np.median(reproj):.2f} "
            f"px, max {np.max(reproj):.2f} px"
        )
        print(_summary("faces, 68 (marched jaw UV)", face_err))
        print(_summary("faces, 68 (fixed template UV)", face_fixed))
    if args.ears and ears:
        space = EarSpace.from_shapes(ears)
        from menpo_densereg.atomic import atomic_write_text

        atomic_write_text(out / "ear_space.json", json.dumps(space.to_dict()))
        ear_err = []
        for im in tqdm(ears, desc="ears", disable=args.no_progress):
            stem = _stem(im, args.folder)
            pts = im.landmarks[im.landmarks.group_labels[0]].points
            try:
                gt = ear_dense_ground_truth(im, pts, space)
            except ValueError as e:
                print(f"skipped {stem}: {e}")
                continue
            found_pts, _ = landmarks_from_uv(gt.u, gt.v, gt.mask, space.uv)
            e = np.linalg.norm(found_pts - pts, axis=1)
            ear_err.append(e)
            _save(out / f"{stem}.npz", gt, pts, {})
            if args.overlays:
                _overlay(
                    out / f"{stem}.png",
                    im,
                    gt,
                    pts,
                    f"{stem}: ear, look-up median {np.nanmedian(e):.2f} px",
                    depth=False,
                )
        print(
            f"wrote ear ground truth for {len(ear_err)}/{len(ears)} ear images "
            f"(reference from {space.n_shapes} ears)"
        )
        print(_summary("ears, 55 (TPS space)", ear_err))
    return 0
