"""Convert an official SHViT detection checkpoint (MMDetection 2.x) to MMDetection 3.x.

Usage:
    python tools/model_converters/official_det_to_mmdet3.py retinanet_shvit_s4_1x_coco.pth out.pth
    python tools/test.py configs/retinanet/shvit_s4.py out.pth

The file is read with ``torch.load(weights_only=True)``; see
:func:`shvit_mm.detection.convert.official_detector_to_mmdet3` for what is checked and converted.
"""
import argparse
import sys

from shvit_mm.detection.convert import convert_official_detector
from shvit_mm.models.backbones.shvit_weights import CheckpointFormatError
from shvit_mm.utils.safe_load import UnsafeCheckpointError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an official SHViT RetinaNet / Mask R-CNN checkpoint (MMDetection 2.x) '
                    'into an MMDetection 3.x checkpoint for configs/{retinanet,mask_rcnn}/shvit_*.py')
    parser.add_argument('src', help='official checkpoint, e.g. retinanet_shvit_s4_1x_coco.pth')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--arch', default='s4', choices=['s1', 's2', 's3', 's4', 'any'],
                        help="SHViT variant the backbone must be (default: s4, the official "
                             "release); 'any' accepts S1-S4")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        meta = convert_official_detector(args.src, args.dst,
                                         arch=None if args.arch == 'any' else args.arch)
    except (CheckpointFormatError, UnsafeCheckpointError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    print(f"Converted {meta['detector']} SHViT-{meta['arch'].upper()} "
          f"({meta['num_classes']} classes) -> {args.dst}; use it with configs/{meta['config']}")
    if meta['num_classes'] != 80:
        print(f"note: the configs are set up for COCO's 80 classes; set num_classes="
              f"{meta['num_classes']} in the heads of your config")


if __name__ == '__main__':
    main()
