# MMDetection's default runtime plus shvit_mm's training safety, for every detection config:
# crash-safe checkpoints (SafeCheckpointHook) and a stop at the first non-finite loss
# (FiniteLossHook). Opt out with default_hooks.checkpoint.type='CheckpointHook' / custom_hooks=[].
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='FiniteLossHook')]
