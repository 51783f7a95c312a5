"""``tools/test.py``: evaluate a checkpoint, with the command line and behaviour of the config's
codebase (its ``default_scope``): MMDetection 3.3's or MMSegmentation 1.2.2's tools/test.py.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT] [--show]
                         [--show-dir DIR] [--wait-time S] [--cfg-options k=v ...]
                         [--launcher {none,pytorch,slurm,mpi}] [--tta] [--fast] [--amp]

The metrics come from the config's ``test_evaluator`` (``CocoMetric`` for the COCO and detection
demo configs: box and mask AP; ``IoUMetric`` for the ADE20K and segmentation demo configs: mIoU).
Where the codebases differ, each keeps its own meaning:

* ``--out``: detection, a ``.pkl`` file of the predictions (``DumpDetResults``); segmentation, a
  directory receiving one predicted label map (PNG) per picture (``IoUMetric(output_dir=OUT)``).
* ``--show-dir DIR``: detection, painted predictions under ``WORK_DIR/<timestamp>/DIR``;
  segmentation, MMSegmentation's visualizer saves them under ``DIR/vis_data/vis_image/``.
* ``--tta``: ``DetTTAModel`` (flip) or ``SegTTAModel`` with the config's ``tta_pipeline``.

shvit_mm's own switches (both codebases): ``--fast`` tests through the fast inference path
(BatchNorm folding and channels-last: :func:`shvit_mm.engine.fast_inference.enable_fast_inference`),
``--amp`` adds mixed precision to it (bf16 autocast on CPUs with AVX-512 BF16 or AMX, fp16 on
CUDA; fp32 with one log line elsewhere).

As in training, shvit_mm's components are registered, missing data is reported before anything is
built, and ``--launcher pytorch`` works without CUDA.
"""
import argparse
import copy
import os
import warnings

from mmengine.config import ConfigDict, DictAction

from .common import (ToolError, check_datasets, cli, load_config, run_guarded, setup_distributed,
                     setup_registries, setup_threads, teardown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Test (and evaluate) a detector or segmentor (MMDetection 3.x / MMSegmentation '
        '1.x + shvit_mm)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
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
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will '
        'be merged into config file. If the value to be overwritten is a list, it should be like '
        'key="[a,b]" or key=a,b. It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]". Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
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
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _apply_tta(cfg) -> None:
    """Wrap the model in ``DetTTAModel`` and the test pipeline in a flip ``TestTimeAug``, using the
    config's ``tta_model`` / ``tta_pipeline`` when it has them (MMDetection's defaults otherwise)."""
    roi_head = cfg.model.get('roi_head') or {}
    if roi_head.get('mask_head') is not None:
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
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for metric in metrics:
        if isinstance(metric, dict) and metric.get('type') in ('IoUMetric', 'mmseg.IoUMetric'):
            metric['output_dir'] = out
            metric['keep_results'] = True  # as MMSegmentation's tools/test.py sets it
            return
    raise ToolError(f'--out needs an IoUMetric in test_evaluator for a segmentation config, got '
                    f'{evaluator}')


def build_config(args):
    """The test config after every command-line option is applied."""
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    scope = setup_registries(cfg)
    if not os.path.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise ToolError(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    if args.fast or args.amp:
        if args.tta:
            raise ToolError('--fast/--amp and --tta do not combine (the TTA wrapper runs the model '
                            'through its own test step); use one of them')
        # after any custom_hooks of the config; acts in before_test, once the checkpoint is loaded
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='FastInferenceHook', amp=bool(args.amp))]
    if scope == 'mmseg':
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
        _apply_tta(cfg)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ToolError(f'--out must name a .pkl/.pickle file, got {args.out}')
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    detection = cfg.default_scope == 'mmdet'
    if detection:
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    check_datasets(cfg, ['test_dataloader'], ['test_evaluator'])
    setup_threads(cfg)
    setup_distributed(cfg)

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out is not None and detection:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    metrics = run_guarded(runner.test, cfg)
    teardown_distributed()
    return metrics


def cli_main(argv=None):
    return cli(main, argv)


if __name__ == '__main__':
    cli_main()
