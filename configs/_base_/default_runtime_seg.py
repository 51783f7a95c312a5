# MMSegmentation's default runtime plus shvit_mm's loss guard (FiniteLossHook: stops at the first
# non-finite loss, before anything from it is saved). MMSegmentation keeps `default_hooks` in its
# schedule files, so the crash-safe checkpoint hook cannot be set here (bases may not share a key):
# each segmentation config sets `default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))`
# itself (tests/engine/test_hooks.py checks every config has both).
_base_ = 'mmseg::_base_/default_runtime.py'
custom_imports = dict(imports=['shvit_mm'], allow_failed_imports=False)

custom_hooks = [dict(type='FiniteLossHook')]
