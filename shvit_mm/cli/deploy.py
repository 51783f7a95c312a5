"""``tools/deploy.py``: export a detector or segmentor to ONNX through MMDeploy 1.3.1, for ONNX
Runtime (:func:`shvit_mm.inference.deploy_onnx.export_onnx`).

    python tools/deploy.py CONFIG CHECKPOINT --work-dir DIR [--shape H W] [--deploy-cfg FILE]
                           [--cfg-options k=v ...] [--device cpu]

writes ``DIR/end2end.onnx`` and ``DIR/deploy_cfg.py`` (the deploy config used). The deploy config
is chosen from the config's codebase and model (``configs/_deploy_/``: detection, instance
segmentation or semantic segmentation; dynamic batch size and picture size; opset 16) unless
``--deploy-cfg`` names one. ``--shape H W`` is the size of the picture traced (the test
pipeline's resize is set to it). A checkpoint that does not fit the config's model is an error,
as in ``tools/test.py``.
"""
import argparse
import os.path as osp

from mmengine.config import DictAction

from shvit_mm.apis.config import ConfigError, read_config
from .common import ToolError, cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a detector or segmentor (MMDetection 3.x / MMSegmentation 1.x + '
        'shvit_mm) to ONNX for ONNX Runtime, through MMDeploy')
    parser.add_argument('config', help='model config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', required=True,
                        help='directory to write end2end.onnx and deploy_cfg.py to')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='height and width of the picture traced (default: a 320x320 picture '
                        "through the config's test pipeline); the graph takes any size")
    parser.add_argument('--deploy-cfg',
                        help='MMDeploy deploy config (default: the one of configs/_deploy_/ for '
                        "the config's task)")
    parser.add_argument('--device', default='cpu', help='device the model is traced on')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format '
        'will be merged into config file')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    """Export; returns the path of the ONNX file."""
    args = parse_args(argv)
    try:
        cfg = read_config(args.config, args.cfg_options)
    except ConfigError as e:
        raise ToolError(str(e)) from None
    if not osp.isfile(args.checkpoint):
        raise ToolError(f'checkpoint not found: {args.checkpoint}')
    if args.deploy_cfg is not None and not osp.isfile(args.deploy_cfg):
        raise ToolError(f'deploy config not found: {args.deploy_cfg}')
    if args.shape is not None and min(args.shape) < 32:
        raise ToolError(f'--shape H W must be at least 32 x 32 pixels, got {args.shape}')
    from shvit_mm.inference.deploy_onnx import (MMDeployNotInstalledError, default_deploy_config,
                                                export_onnx)
    try:
        default_deploy_config(cfg)  # a detector or segmentor
    except ValueError as e:
        raise ToolError(str(e)) from None
    try:
        path = export_onnx(cfg, args.checkpoint, args.work_dir, deploy_cfg=args.deploy_cfg,
                           shape=args.shape, device=args.device)
    except MMDeployNotInstalledError as e:
        raise ToolError(str(e)) from None
    print(f'ONNX model written to {path}', flush=True)
    return path


def cli_main(argv=None):
    """:func:`main` for the command line: user errors exit with status 1 and an ``error:`` line."""
    return cli(main, argv)
