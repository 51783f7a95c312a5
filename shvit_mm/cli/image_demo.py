"""``tools/image_demo.py``: run a detection or segmentation config on pictures and save the painted
predictions with the codebase's own inferencer (MMDetection's DetInferencer or MMSegmentation's
MMSegInferencer, chosen by :func:`shvit_mm.apis.build_inferencer`).

    python tools/image_demo.py IMAGE_DIR_OR_URL CONFIG --weights CKPT [--out-dir outputs]
                               [--device cpu] [--score-thr 0.3] [--max-side 2048] [--fast] [--amp]

A missing input, a folder without pictures, a URL that cannot be read, a missing or broken weights
file and weights that do not fit the config are one ``error:`` line and exit status 1. In a
folder, a file that is not a picture is skipped with a warning naming it; the last line counts what
was processed and skipped (exit status 1 if nothing was).

Memory: the predictions are full-size per picture. MMDetection pastes every detection's mask at the
picture's size (one byte a pixel each, up to the RoI head's ``max_per_img``, 100 for Mask R-CNN)
and the visualizer works on full-size copies of every mask it draws; MMSegmentation upsamples its
logits to the picture's size (four bytes a pixel per class). So that a large picture does not take
gigabytes, detections at or below ``--score-thr`` are dropped before their masks are pasted (they
are neither drawn nor saved), and pictures larger than ``--max-side`` are shrunk first (painted
pictures and predictions are then at that size, as a warning line says).
"""
import argparse
import http.client
import os
import os.path as osp
import pickle
import sys
import tempfile

from .common import ToolError, cli

#: what the inferencers take as a picture file name (their outputs are named after it)
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('inputs', help='an image file, a folder of images or an image URL')
    p.add_argument('config', help='detection or segmentation config')
    p.add_argument('--weights', required=True,
                   help='checkpoint file, or an .onnx file from tools/deploy.py')
    p.add_argument('--out-dir', default='outputs', help='where painted pictures (vis/) and '
                   'predictions (detection: preds/, segmentation: pred/) go')
    p.add_argument('--device', default=None, help="e.g. 'cpu' or 'cuda:0' (default: the best)")
    p.add_argument('--score-thr', type=float, default=0.3, help='detection: detections scoring '
                   'at or below it are dropped (before their masks are pasted)')
    p.add_argument('--max-side', type=int, default=2048, help='pictures whose longer side is '
                   'larger are shrunk to it first, to bound memory (0: never)')
    p.add_argument('--fast', action='store_true',
                   help='fast inference path (BatchNorm folding, channels-last)')
    p.add_argument('--amp', action='store_true', help='fast path in mixed precision (bf16 on '
                   'CPUs with AVX-512 BF16 or AMX, fp16 on CUDA); implies --fast')
    args = p.parse_args(argv)
    if args.max_side < 0:
        p.error(f'--max-side must be 0 (never shrink) or positive, got {args.max_side}')
    return args


def _warn(message: str) -> None:
    print(f'warning: {message}', file=sys.stderr, flush=True)


def list_inputs(inputs: str) -> list:
    """The pictures to run on: the URL, the file, or the files of the folder whose header OpenCV
    recognises (the others are named in a warning)."""
    import cv2
    if '://' in inputs:
        return [inputs]
    if osp.isfile(inputs):
        if not cv2.haveImageReader(inputs):
            raise ToolError(f'{inputs} is not a picture OpenCV can read')
        return [inputs]
    if not osp.isdir(inputs):
        raise ToolError(f'input not found: {inputs} (give an image file, a folder of images or a '
                        'URL)')
    files = sorted(osp.join(inputs, f) for f in os.listdir(inputs))
    files = [f for f in files if osp.isfile(f)]
    pictures = [f for f in files if cv2.haveImageReader(f)]
    if not pictures:
        raise ToolError(f'no pictures in the folder {inputs} ({len(files)} files, none of them a '
                        'picture OpenCV can read)')
    for f in files:
        if f not in pictures:
            _warn(f'skipped {f}: not a picture OpenCV can read')
    return pictures


def read_picture(src: str):
    """``src`` decoded as the test pipeline decodes it (None if it is not a picture); a URL that
    cannot be fetched is a ToolError."""
    import mmcv
    from mmengine.fileio import get
    try:
        data = get(src)
    except (OSError, ValueError, http.client.HTTPException) as e:
        if '://' in src:
            raise ToolError(f'cannot read the URL {src}: {e}') from None
        raise
    try:
        return mmcv.imfrombytes(data)
    except Exception:  # noqa: BLE001 - whatever the decoder says, it is not a picture
        return None


def drop_before_masks(model, score_thr: float) -> None:
    """Raise the RoI head's own score threshold to ``score_thr``, so that masks are pasted only
    for the detections that are drawn (the same set: both keep scores above it)."""
    test_cfg = getattr(getattr(model, 'roi_head', None), 'test_cfg', None)
    if test_cfg is not None and 'score_thr' in test_cfg:
        test_cfg['score_thr'] = max(test_cfg['score_thr'], score_thr)


def _check_device(device) -> None:
    if device and str(device).startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            raise ToolError(f'--device {device}: PyTorch sees no CUDA device here; use --device '
                            'cpu (or leave --device out)')


def build(args):
    """The inferencer of ``args.config`` with ``args.weights`` (user errors as ToolError) and
    whether it is a detection one."""
    from shvit_mm.apis import ConfigError, build_inferencer, codebase_of, read_config
    from shvit_mm.inference.deploy_onnx import is_onnx_file
    from shvit_mm.utils.safe_load import check_checkpoint_file, unsafe_checkpoint_error
    onnx = is_onnx_file(args.weights)  # an exported graph, read by ONNX Runtime
    if '://' not in args.weights:
        if not osp.isfile(args.weights):
            raise ToolError(f'weights not found: {args.weights}')
        if not onnx:
            check_checkpoint_file(args.weights)  # empty, truncated, not a checkpoint: one line
    _check_device(args.device)
    if onnx and (args.fast or args.amp):
        raise ToolError('--fast and --amp do not apply to an .onnx model (it runs as exported)')
    try:
        det = codebase_of(read_config(args.config)) == 'mmdet'
        inferencer = build_inferencer(args.config, args.weights, args.device, fast=args.fast,
                                      amp=args.amp)
    except ConfigError as e:
        raise ToolError(str(e)) from None
    except pickle.UnpicklingError as e:
        raise unsafe_checkpoint_error(args.weights, e) from e
    return inferencer, det


def _as_file(src: str, img, max_side: int, tmp: str) -> str:
    """The file to give the inferencer for the decoded picture ``img`` of ``src``: ``src`` itself,
    or a lossless copy in ``tmp`` under the same name when it is shrunk, a URL or has a name the
    inferencers do not take for a picture (they name their outputs after the file)."""
    import cv2
    import mmcv
    name = osp.basename(src.split('?')[0]) or 'picture'
    path = src if osp.splitext(name)[1].lower() in IMG_EXTENSIONS else None
    name += '' if path else '.png'
    h, w = img.shape[:2]
    if max_side and max(h, w) > max_side:
        img = mmcv.imrescale(img, max_side / max(h, w), interpolation='area')
        _warn(f'{src}: {w}x{h} shrunk to {img.shape[1]}x{img.shape[0]} (--max-side {max_side}); '
              'painted picture and predictions are at that size')
        path = None
    if path is None or '://' in src:
        path = osp.join(tmp, name)
        cv2.imencode('.png', img)[1].tofile(path)  # lossless; decoders read it by its content
    return path


def main(argv=None):
    """Paint the predictions of every picture of ``inputs``; returns how many were processed."""
    args = parse_args(argv)
    sources = list_inputs(args.inputs)
    inferencer, det = build(args)
    kwargs = dict(out_dir=args.out_dir)
    if det:
        drop_before_masks(inferencer.model, args.score_thr)
        kwargs.update(pred_score_thr=args.score_thr, no_save_pred=False)
    done, skipped = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            img = read_picture(src)
            if img is None:
                if not osp.isdir(args.inputs):
                    raise ToolError(f'{src} is not a picture OpenCV can read')
                _warn(f'skipped {src}: not a picture OpenCV can read')
                skipped.append(src)
                continue
            path = _as_file(src, img, args.max_side, tmp)
            del img  # the inferencer decodes the file again; not two full-size copies at once
            inferencer(path, **kwargs)
            done += 1
    print(f'{done} picture(s) processed, {len(skipped)} skipped; results saved under '
          f'{args.out_dir}')
    if not done:
        raise ToolError(f'no picture processed ({len(skipped)} skipped)')
    return done


def cli_main(argv=None):
    """:func:`main` for the command line: user errors exit with status 1 and an ``error:`` line."""
    return cli(main, argv)
