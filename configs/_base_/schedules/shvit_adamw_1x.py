# The official SHViT detection schedule: MMDetection's 1x (12 epochs, 500-iteration linear warm-up
# from 0.001, lr x0.1 at epochs 8 and 11) with AdamW, for 2 images per GPU x 8 GPUs.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
auto_scale_lr = dict(enable=False, base_batch_size=16)
