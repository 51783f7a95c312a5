# MMDetection's COCO detection data settings (same files, pipelines and loaders),
# read through SHViTCocoDataset: a bad annotation file stops with the file and annotation id named,
# and what MMDetection drops is counted in one log line per dataset.
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

dataset_type = 'SHViTCocoDataset'
train_dataloader = dict(dataset=dict(type=dataset_type))
val_dataloader = dict(dataset=dict(type=dataset_type))
test_dataloader = val_dataloader
