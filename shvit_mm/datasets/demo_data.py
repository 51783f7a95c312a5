"""Embedded demo dataset: a small COCO-format instance-segmentation set made on first use.

Nothing is downloaded. Each image is a crop of one of the photographs that scikit-image ships in
``skimage.data`` (randomly cropped, resized, flipped and colour-jittered), with 1-6 objects pasted on
it. Every object is one of five shapes (``disc``, ``square``, ``triangle``, ``star``, ``ring``) at a
random size, aspect ratio and rotation, textured with a colour-jittered crop of another photograph
and blended in with anti-aliased edges. Later objects may occlude earlier ones (each object keeps at
least half of itself visible); the annotations describe the *visible* part: COCO RLE masks, tight
boxes around the visible pixels, areas in pixels.

Creation is deterministic: every image is drawn from its own random stream seeded by
``(seed, split, index)``, so the same arguments give the same files byte for byte (on a given
OpenCV/NumPy build), and a smaller dataset is a prefix of a larger one. The set is written to a
temporary directory beside the target and renamed into place only when complete, so a crash or
several processes creating it at once never leave a half-written dataset behind. That directory
is named after the host and process making it, so that a later creation removes the ones of
killed processes (:func:`make_staging_dir`); it and the files honour the umask.

Layout under ``root`` (default ``data/shvit_demo``, relative to the current directory)::

    annotations/instances_train.json   annotations/instances_val.json
    train/000000.jpg ...               val/000000.jpg ...
    meta.json                          (the arguments it was made with)

This module is codebase-neutral (NumPy, OpenCV, pycocotools). Use the data through the
codebases' dataset classes, which create them if missing: ``SHViTDemoDataset``
(:mod:`shvit_mm.detection.datasets`, MMDetection), or call :func:`make_demo_dataset` directly.
"""
import functools
import json
import os
import os.path as osp
import shutil
import socket
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'DEMO_CLASSES', 'DEMO_PALETTE', 'DEMO_VERSION', 'DEFAULT_DEMO_ROOT', 'make_demo_dataset',
    'demo_dataset_ready'
]

DEMO_CLASSES = ('disc', 'square', 'triangle', 'star', 'ring')
DEMO_PALETTE = [(220, 20, 60), (0, 130, 230), (250, 170, 30), (120, 200, 60), (170, 60, 220)]
# Bump when the drawing code changes: a dataset made by another version is then rejected clearly.
DEMO_VERSION = 2
DEFAULT_DEMO_ROOT = 'data/shvit_demo'

# Photographs bundled inside the scikit-image wheel (no download); grey ones are stacked to RGB.
_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'camera', 'coins', 'moon', 'brick', 'grass',
           'gravel', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'page', 'text', 'clock',
           'cell', 'colorwheel')
_SPLITS = ('train', 'val')
_RADIUS = (0.08, 0.24)  # object size range, as a fraction of the shorter picture side
_SUPERSAMPLE = 4  # shapes are rasterised at 4x and area-averaged down: anti-aliased edges


@functools.lru_cache(maxsize=1)
def _load_photos() -> Tuple[np.ndarray, ...]:
    try:
        import skimage.data as skdata
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('The shvit_mm demo dataset is drawn from the photographs that scikit-image '
                          'ships; install it with `pip install scikit-image`.') from e
    photos = []
    for name in _PHOTOS:
        img = np.asarray(getattr(skdata, name)())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        photos.append(np.ascontiguousarray(img[..., :3].astype(np.uint8)))
    return tuple(photos)


# ----------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------
def _shape_polygons(cls: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Filled and hole polygons of a shape in unit coordinates (about [-1, 1]^2)."""
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    if cls == 0:  # disc
        return [circle], []
    if cls == 1:  # square
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.85], []
    if cls == 2:  # triangle (equilateral, centred)
        a = np.deg2rad([-90, 30, 150])
        return [np.stack([np.cos(a), np.sin(a)], 1) * 1.15], []
    if cls == 3:  # five-pointed star
        a = np.deg2rad(np.arange(10) * 36 - 90)
        r = np.where(np.arange(10) % 2 == 0, 1.15, 0.5)
        return [np.stack([np.cos(a) * r, np.sin(a) * r], 1)], []
    if cls == 4:  # ring
        return [circle], [circle * 0.5]
    raise ValueError(cls)


def _rasterise(cls: int, size: float, aspect: float, angle: float) -> np.ndarray:
    """Alpha matte (float32 in [0, 1]) of a shape of radius ``size`` px, in a square canvas."""
    import cv2
    half = int(np.ceil(size * 1.25 * max(aspect, 1 / aspect))) + 2
    canvas = 2 * half
    s = _SUPERSAMPLE
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    scale = np.array([size * aspect, size / aspect])

    def to_px(poly):
        pts = (poly * scale) @ rot.T + half
        return np.round(pts * s * 16).astype(np.int32)  # 4 fractional bits for cv2 shift

    hi = np.zeros((canvas * s, canvas * s), np.uint8)
    fills, holes = _shape_polygons(cls)
    cv2.fillPoly(hi, [to_px(p) for p in fills], 255, lineType=cv2.LINE_8, shift=4)
    if holes:
        cv2.fillPoly(hi, [to_px(p) for p in holes], 0, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(hi, (canvas, canvas), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.


def _jitter_colour(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Hue rotation, saturation/brightness/contrast changes; float32 RGB in [0, 255] out."""
    import cv2
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 180) * strength) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - 0.6 * strength, 1 + 0.8 * strength), 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - 0.4 * strength, 1 + 0.3 * strength) + mean
    out = out + rng.uniform(-40, 40) * strength
    return np.clip(out, 0, 255)


def _random_crop(photo: np.ndarray, out_h: int, out_w: int, rng: np.random.Generator,
                 min_frac: float) -> np.ndarray:
    """A random crop of ``photo`` with the aspect of (out_h, out_w), resized to that size."""
    import cv2
    ph, pw = photo.shape[:2]
    frac = rng.uniform(min_frac, 1.0)
    ch = min(ph, pw * out_h / out_w) * frac
    cw = ch * out_w / out_h
    y0 = rng.uniform(0, ph - ch)
    x0 = rng.uniform(0, pw - cw)
    crop = photo[int(y0):int(y0 + ch) + 1, int(x0):int(x0 + cw) + 1]
    crop = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.3:
        crop = crop[::-1]
    return np.ascontiguousarray(crop)


def _draw_image(photos: Sequence[np.ndarray], rng: np.random.Generator, min_side: int,
                max_side: int, max_objects: int):
    """One picture and its objects: (RGB uint8 image, [(class, visible bool mask), ...])."""
    h = int(rng.integers(min_side, max_side + 1))
    w = int(rng.integers(min_side, max_side + 1))
    bg = photos[int(rng.integers(len(photos)))]
    image = _jitter_colour(_random_crop(bg, h, w, rng, 0.3), rng, 0.5)

    n_obj = int(rng.integers(min(2, max_objects), max_objects + 1))
    objects = []  # [class, full mask, visible mask], masks over the whole picture
    for _ in range(n_obj):
        for _attempt in range(25):
            cls = int(rng.integers(len(DEMO_CLASSES)))
            size = rng.uniform(_RADIUS[0], _RADIUS[1]) * min(h, w)  # "radius" in pixels
            aspect = float(np.exp(rng.uniform(-0.2, 0.2)))
            angle = rng.uniform(0, 2 * np.pi)
            alpha = _rasterise(cls, size, aspect, angle)
            k = alpha.shape[0]
            cy = rng.uniform(0.1 * h, 0.9 * h)
            cx = rng.uniform(0.1 * w, 0.9 * w)
            y0, x0 = int(round(cy)) - k // 2, int(round(cx)) - k // 2
            ys, xs = max(y0, 0), max(x0, 0)  # the part of the canvas inside the picture
            ye, xe = min(y0 + k, h), min(x0 + k, w)
            window = (slice(ys, ye), slice(xs, xe))
            a_win = alpha[ys - y0:ye - y0, xs - x0:xe - x0]
            m_win = a_win >= 0.5
            total = (alpha >= 0.5).sum()
            if total == 0 or m_win.sum() < 0.6 * total:  # mostly outside the picture
                continue
            # keep every earlier object at least half visible
            if any((vis[window] & m_win).sum() > vis.sum() - 0.5 * fm.sum()
                   for _, fm, vis in objects):
                continue
            break
        else:
            continue
        wh, ww = ye - ys, xe - xs
        tex_photo = photos[int(rng.integers(len(photos)))]
        tex = _jitter_colour(_random_crop(tex_photo, wh, ww, rng, 0.15), rng, 1.0)
        # a flat colour wash plus a soft linear shading make objects read as solid things
        tint = rng.uniform(0, 255, size=3).astype(np.float32)
        tex = tex * (1 - rng.uniform(0.2, 0.6)) + tint * rng.uniform(0.2, 0.6)
        gy, gx = np.mgrid[ys:ye, xs:xe].astype(np.float32)
        direction = rng.uniform(0, 2 * np.pi)
        shade = ((gx - cx) * np.cos(direction) + (gy - cy) * np.sin(direction)) / max(size, 1.)
        tex = np.clip(tex + 25 * shade[..., None], 0, 255)
        a = a_win[..., None]
        image[window] = image[window] * (1 - a) + tex * a
        mask = np.zeros((h, w), bool)
        mask[window] = m_win
        for obj in objects:
            obj[2][window] &= ~m_win
        objects.append([cls, mask, mask.copy()])
    noise = rng.normal(0, 3, image.shape).astype(np.float32)
    image = np.clip(np.round(image + noise), 0, 255).astype(np.uint8)
    return image, [(cls, vis) for cls, _, vis in objects if vis.any()]


def _annotation(mask: np.ndarray, cls: int, ann_id: int, img_id: int) -> Dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return dict(
        id=ann_id,
        image_id=img_id,
        category_id=cls + 1,
        segmentation=dict(size=[int(mask.shape[0]), int(mask.shape[1])],
                          counts=rle['counts'].decode('ascii')),
        area=int(mask.sum()),
        bbox=[x0, y0, x1 - x0, y1 - y0],
        iscrowd=0)


def _make_split(photos, out_dir: str, split: int, num_images: int, spec: Dict) -> Dict:
    import cv2
    name = _SPLITS[split]
    os.makedirs(osp.join(out_dir, name))
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([spec['seed'], split, i])
        image, objects = _draw_image(photos, rng, spec['min_side'], spec['max_side'],
                                     spec['max_objects'])
        file_name = f'{i:06d}.jpg'
        ok, buf = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok, 'JPEG encoding failed'
        with open(osp.join(out_dir, name, file_name), 'wb') as f:
            f.write(buf.tobytes())
        img_id = i + 1
        images.append(dict(id=img_id, file_name=file_name, height=image.shape[0],
                           width=image.shape[1]))
        for cls, mask in objects:
            annotations.append(_annotation(mask, cls, len(annotations) + 1, img_id))
    return dict(
        info=dict(description=f'shvit_mm embedded demo dataset ({name})', version=DEMO_VERSION),
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(DEMO_CLASSES)])


def _spec(num_train, num_val, seed, min_side, max_side, max_objects) -> Dict:
    spec = dict(version=DEMO_VERSION, num_train=int(num_train), num_val=int(num_val), seed=int(seed),
                min_side=int(min_side), max_side=int(max_side), max_objects=int(max_objects))
    if spec['num_train'] < 1 or spec['num_val'] < 1:
        raise ValueError(f'demo dataset needs at least one train and one val image, got {spec}')
    if not 64 <= spec['min_side'] <= spec['max_side']:
        raise ValueError(f'demo dataset needs 64 <= min_side <= max_side, got {spec}')
    if spec['max_objects'] < 1:
        raise ValueError(f'demo dataset needs max_objects >= 1, got {spec}')
    return spec


def make_staging_dir(target: str) -> str:
    """Create an empty folder beside ``target`` to write it in, then rename it to ``target``.

    Its name, ``.<name of target>.tmp-<host>-<pid>-<random>``, tells whose it is: the staging
    folders of ``target`` that a dead process of this host left (a kill during creation) are
    removed first; those of live processes (a concurrent creation) or other hosts are left alone.
    Unlike :func:`tempfile.mkdtemp` (mode 0700) it is made with the umask's mode, which the final
    folder keeps.
    """
    parent, prefix = osp.dirname(target), f'.{osp.basename(target)}.tmp-'
    host = socket.gethostname()
    for name in os.listdir(parent) if os.name == 'posix' else ():
        owner = name[len(prefix):].rsplit('-', 2) if name.startswith(prefix) else ()
        if len(owner) == 3 and owner[0] == host and owner[1].isdigit() and \
                not _process_alive(int(owner[1])):
            shutil.rmtree(osp.join(parent, name), ignore_errors=True)
    tmp = osp.join(parent, f'{prefix}{host}-{os.getpid()}-{os.urandom(4).hex()}')
    os.mkdir(tmp)  # mode 0777 minus the umask
    return tmp


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def demo_dataset_ready(root: str, spec: Optional[Dict] = None) -> bool:
    """Whether a complete demo dataset is at ``root`` (made with ``spec`` when given)."""
    meta_file = osp.join(root, 'meta.json')
    if not osp.isfile(meta_file):
        return False
    if spec is not None:
        with open(meta_file) as f:
            meta = json.load(f)
        if meta != spec:
            raise RuntimeError(
                f'The demo dataset at {osp.abspath(root)} was made with {meta}, but {spec} was asked '
                f'for. Delete that folder (it is re-created on the next run) or point data_root '
                f'somewhere else.')
    return True


def make_demo_dataset(root: str = DEFAULT_DEMO_ROOT,
                      num_train: int = 300,
                      num_val: int = 80,
                      seed: int = 0,
                      min_side: int = 256,
                      max_side: int = 320,
                      max_objects: int = 7,
                      verbose: bool = True) -> str:
    """Create the demo dataset at ``root`` unless a complete one is already there.

    Returns the absolute path of ``root``. Safe against crashes and concurrent callers: the files
    are written to a temporary sibling directory that is renamed to ``root`` only when complete.
    """
    spec = _spec(num_train, num_val, seed, min_side, max_side, max_objects)
    root = osp.abspath(root)
    if demo_dataset_ready(root, spec):
        return root
    if osp.exists(root) and os.listdir(root):
        raise RuntimeError(f'{root} exists but holds no complete demo dataset (no meta.json). '
                           f'Delete it or choose another data_root.')
    parent = osp.dirname(root)
    os.makedirs(parent, exist_ok=True)
    start = time.time()
    if verbose:
        print(f'shvit_mm: creating the demo dataset ({num_train} train + {num_val} val images) '
              f'in {root} ...', flush=True)
    tmp = make_staging_dir(root)
    try:
        photos = _load_photos()
        os.makedirs(osp.join(tmp, 'annotations'))
        for split, n in enumerate((spec['num_train'], spec['num_val'])):
            coco = _make_split(photos, tmp, split, n, spec)
            with open(osp.join(tmp, 'annotations', f'instances_{_SPLITS[split]}.json'), 'w') as f:
                json.dump(coco, f, separators=(',', ':'))
        with open(osp.join(tmp, 'meta.json'), 'w') as f:
            json.dump(spec, f, indent=1, sort_keys=True)
        if osp.isdir(root) and not os.listdir(root):
            os.rmdir(root)
        try:
            os.rename(tmp, root)
        except OSError:
            # another process finished first: use its copy (it was made from the same spec)
            if not demo_dataset_ready(root, spec):
                raise
    finally:
        if osp.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f'shvit_mm: demo dataset ready in {time.time() - start:.1f} s', flush=True)
    return root
