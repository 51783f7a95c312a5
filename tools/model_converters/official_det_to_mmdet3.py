"""Convert an official SHViT detection checkpoint (RetinaNet / Mask R-CNN, MMDetection 2.x) into an
MMDetection 3.x checkpoint, checked tensor for tensor against the model of its config.

    python tools/model_converters/official_det_to_mmdet3.py retinanet_shvit_s4_1x_coco.pth out.pth
    python tools/test.py configs/retinanet/shvit_s4.py out.pth

The source is read with PyTorch's weights_only loader (no pickled code runs); the conversion is
:func:`shvit_mm.models.backbones.shvit_weights.mmdet2_detector_to_mmdet3`.
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from shvit_mm.apis.config import build_model  # noqa: E402
from shvit_mm.models.backbones import SHViT  # noqa: E402
from shvit_mm.models.backbones.shvit_weights import (  # noqa: E402
    CheckpointFormatError, match_state_dict, mmdet2_detector_to_mmdet3)
from shvit_mm.utils.safe_load import UnsafeCheckpointError, safe_load  # noqa: E402

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
#: the heads whose class count follows the checkpoint's
HEADS = {'retinanet': ['bbox_head'], 'mask_rcnn': ['roi_head.bbox_head', 'roi_head.mask_head']}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an official SHViT RetinaNet / Mask R-CNN checkpoint (MMDetection 2.x) '
                    'into an MMDetection 3.x checkpoint for configs/{retinanet,mask_rcnn}/shvit_*.py')
    parser.add_argument('src', help='official checkpoint, e.g. retinanet_shvit_s4_1x_coco.pth')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--arch', default='s4', choices=['s1', 's2', 's3', 's4', 'any'],
                        help="SHViT variant the backbone must be (default: s4, the official "
                             "release); 'any' accepts S1-S4")
    parser.add_argument('--config', help='the config the result must load into strictly '
                        '(default: configs/<retinanet|mask_rcnn>/shvit_<arch>.py)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        converted = mmdet2_detector_to_mmdet3(safe_load(args.src), SHViT.arch_zoo, source=args.src,
                                              arch=None if args.arch == 'any' else args.arch)
        meta = converted['meta']
        config = args.config or osp.join(CONFIGS, meta['detector'], f'shvit_{meta["arch"]}.py')
        classes = {f'model.{head}.num_classes': meta['num_classes']
                   for head in HEADS[meta['detector']]}
        match_state_dict(build_model(config, classes, init=False), converted['state_dict'],
                         source=f'{args.src} (converted)')
    except (CheckpointFormatError, UnsafeCheckpointError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(converted, args.dst)
    print(f"Converted {meta['detector']} SHViT-{meta['arch'].upper()} ({meta['num_classes']} "
          f'classes) -> {args.dst}; use it with {osp.relpath(config)}')
    if meta['num_classes'] != 80:
        print(f"note: the configs are set up for COCO's 80 classes; set num_classes="
              f"{meta['num_classes']} in the heads of your config")


if __name__ == '__main__':
    main()
