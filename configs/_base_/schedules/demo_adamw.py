# The demos' optimiser and loops (detection and segmentation): AdamW from scratch, no weight decay
# on norms and biases, gradients clipped at norm 10, a seeded run. Each demo sets the learning
# rate, weight decay, training loop and schedule.
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0.),
    clip_grad=dict(max_norm=10., norm_type=2))
randomness = dict(seed=0)
