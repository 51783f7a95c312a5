"""``tools/test.py``: evaluate a checkpoint with the command line and behaviour of the config's
codebase (its ``default_scope``): MMDetection 3.3's or MMSegmentation 1.2.2's tools/test.py.
The metrics come from the config's ``test_evaluator`` (``CocoMetric``: box and mask AP;
``IoUMetric``: mIoU). Where the codebases differ, each keeps its own meaning:

* ``--out``: detection, a ``.pkl`` file of the predictions (``DumpDetResults``); segmentation, a
  directory receiving one predicted label map (PNG) per picture (``IoUMetric(output_dir=OUT)``).
* ``--show-dir DIR``: detection, painted predictions under ``WORK_DIR/<timestamp>/DIR``;
  segmentation, MMSegmentation's visualizer saves them under ``DIR/vis_data/vis_image/``.
* ``--tta``: ``DetTTAModel`` (flip) or ``SegTTAModel`` with the config's ``tta_pipeline``.

shvit_mm's own switches (both codebases): ``--fast`` tests through the fast inference path
(:func:`shvit_mm.inference.enable_fast_inference`: BatchNorm folding, channels-last), ``--amp``
adds mixed precision to it (bf16 autocast on CPUs with AVX-512 BF16 or AMX, fp16 on CUDA; fp32
with one log line elsewhere). As in training, missing data is reported before anything is built
and ``--launcher pytorch`` works without CUDA. A checkpoint whose tensors do not all fit the
config's model (another variant, another codebase) is an error, not a warning
(:mod:`shvit_mm.engine.weights_check`). An ``.onnx`` file from ``tools/deploy.py`` in place of the
checkpoint is evaluated through ONNX Runtime
(:func:`shvit_mm.inference.deploy_onnx.build_onnx_model`).
"""
import copy
import os
import warnings

from mmengine.config import ConfigDict

from shvit_mm.engine.weights_check import add_weights_check
from shvit_mm.inference.deploy_onnx import is_onnx_file
from .common import (ToolError, build_runner, cli, load_config, parse_tool_args, run_guarded,
                     tool_parser)


def parse_args(argv=None):
    parser = tool_parser(
        'test', 'Test (and evaluate) a detector or segmentor (MMDetection 3.x / MMSegmentation 1.x '
        '+ shvit_mm)', 'the directory to save the file containing evaluation metrics')
    parser.add_argument('checkpoint', help='checkpoint file, or an .onnx file from tools/deploy.py')
    parser.add_argument(
        '--out', type=str,
        help='detection: dump predictions to a pickle file for offline evaluation; segmentation: '
        'the directory to save the predicted label maps in')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. If specified, it will be automatically '
        'saved to the work_dir/timestamp/show_dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true',
        help="test-time augmentation (detection: flip; segmentation: the config's tta_pipeline)")
    parser.add_argument(
        '--fast', action='store_true',
        help='fast inference path: fold BatchNorms into convolutions, channels-last memory format')
    parser.add_argument(
        '--amp', action='store_true',
        help='the fast path in mixed precision: bf16 autocast on CPUs with AVX-512 BF16 or AMX, '
        'fp16 on CUDA (implies --fast)')
    return parse_tool_args(parser, argv)


def _apply_det_tta(cfg) -> None:
    """Wrap the model in ``DetTTAModel`` and the test pipeline in a flip ``TestTimeAug``, using the
    config's ``tta_model`` / ``tta_pipeline`` when it has them (MMDetection's defaults otherwise)."""
    if (cfg.model.get('roi_head') or {}).get('mask_head') is not None:
        raise ToolError("--tta: MMDetection's DetTTAModel merges boxes only and cannot merge "
                        'instance masks, so it does not work with this instance-segmentation '
                        'model; test without --tta (or use it with a box detector such as RetinaNet).')
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, we will set it as default.')
        cfg.tta_model = dict(
            type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, we will set it as default.')
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:
            test_data_cfg = test_data_cfg['dataset']
        if 'batch_shapes_cfg' in test_data_cfg:
            test_data_cfg.batch_shapes_cfg = None  # fixed output shapes do not mix with TTA
        pipeline = copy.deepcopy(test_data_cfg.pipeline)
        pack = pipeline[-1]
        if pack.get('type') != 'PackDetInputs':
            raise ToolError('--tta without a tta_pipeline in the config needs a test pipeline that '
                            f'ends with PackDetInputs, got {pack.get("type")}')
        meta_keys = tuple(pack.get('meta_keys', ('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                 'scale_factor')))
        meta_keys += tuple(k for k in ('flip', 'flip_direction') if k not in meta_keys)
        flip_tta = dict(
            type='TestTimeAug',
            transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                        [dict(type='PackDetInputs', meta_keys=meta_keys)]])
        cfg.tta_pipeline = pipeline[:-1] + [flip_tta]
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def _apply_seg_tta(cfg) -> None:
    """MMSegmentation's --tta: the config's ``tta_pipeline`` and ``tta_model`` (``SegTTAModel``)."""
    missing = [k for k in ('tta_pipeline', 'tta_model') if not cfg.get(k)]
    if missing:
        raise ToolError(f'--tta needs {" and ".join(missing)} in the config (MMSegmentation\'s '
                        "ADE20K data config and default runtime define them: tta_model="
                        "dict(type='SegTTAModel') and a TestTimeAug tta_pipeline); add them or "
                        'test without --tta')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def _seg_visualization(cfg, args) -> None:
    """MMSegmentation's --show / --show-dir: turn on the SegVisualizationHook's drawing; pictures
    go to the visualizer's save_dir (``DIR/vis_data/vis_image/``)."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if not hook:
        raise ToolError('--show/--show-dir need a visualization hook in the config: '
                        "default_hooks = dict(visualization=dict(type='SegVisualizationHook'))")
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def _seg_output_dir(cfg, out: str) -> None:
    """MMSegmentation's --out: IoUMetric writes each predicted label map to ``out/<name>.png``."""
    if out.endswith(('.pkl', '.pickle', '.json')):
        raise ToolError(f'--out names a directory for segmentation configs (one predicted label '
                        f'map per picture, as in MMSegmentation), got the file name {out}')
    evaluator = cfg.test_evaluator
    for metric in evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]:
        if isinstance(metric, dict) and metric.get('type') in ('IoUMetric', 'mmseg.IoUMetric'):
            metric['output_dir'] = out
            metric['keep_results'] = True  # as MMSegmentation's tools/test.py sets it
            return
    raise ToolError(f'--out needs an IoUMetric in test_evaluator for a segmentation config, got '
                    f'{evaluator}')


def build_config(args):
    """The test config after every command-line option is applied."""
    cfg = load_config(args)
    if not os.path.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise ToolError(f'checkpoint not found: {args.checkpoint}')
    if is_onnx_file(args.checkpoint):
        # the exported graph is the model (tools/deploy.py): nothing to load into PyTorch's
        if args.fast or args.amp or args.tta or args.launcher != 'none':
            raise ToolError('an .onnx model runs as exported, in one process: --fast, --amp, --tta '
                            'and --launcher do not apply to it')
        cfg.load_from = None
    else:
        cfg.load_from = args.checkpoint
        add_weights_check(cfg, 'test')  # a checkpoint that does not fit the model is an error
    if args.fast or args.amp:
        if args.tta:
            raise ToolError('--fast/--amp and --tta do not combine (the TTA wrapper runs the model '
                            'through its own test step); use one of them')
        # after any custom_hooks of the config; acts in before_test, once the checkpoint is loaded
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='FastInferenceHook', amp=bool(args.amp))]
    if cfg.default_scope == 'mmseg':
        if args.show or args.show_dir:
            _seg_visualization(cfg, args)
        if args.tta:
            _apply_seg_tta(cfg)
        if args.out is not None:
            _seg_output_dir(cfg, args.out)
        return cfg
    if args.show or args.show_dir:
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        _apply_det_tta(cfg)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ToolError(f'--out must name a .pkl/.pickle file, got {args.out}')
    return cfg


def main(argv=None):
    """Test; returns the metrics."""
    args = parse_args(argv)
    cfg = build_config(args)
    runner = build_runner(cfg, ['test_dataloader'], ['test_evaluator'])
    if is_onnx_file(args.checkpoint):
        from shvit_mm.inference.deploy_onnx import MMDeployNotInstalledError, build_onnx_model
        try:
            runner.model = build_onnx_model(cfg, args.checkpoint)
        except MMDeployNotInstalledError as e:
            raise ToolError(str(e)) from None
    if args.out is not None and cfg.default_scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    return run_guarded(runner.test, cfg)


def cli_main(argv=None):
    """:func:`main` for the command line: user errors exit with status 1 and an ``error:`` line."""
    return cli(main, argv)
