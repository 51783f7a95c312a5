"""One SHViT, visible to every codebase; the core imports without MMDetection / MMSegmentation;
no import cycle inside shvit_mm."""
import ast
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT

PACKAGE = osp.join(REPO_ROOT, 'shvit_mm')


def test_backbone_imports_where_mmdet_mmseg_and_mmcv_cannot_be_imported():
    code = '''
import sys
for name in ('mmdet', 'mmseg', 'mmcv'):
    sys.modules[name] = None  # any `import mmdet` now raises ImportError
from shvit_mm.models.backbones import SHViT, load_backbone_checkpoint  # noqa: F401
from shvit_mm.models.backbones.shvit_weights import to_official_layout  # noqa: F401
from shvit_mm.utils.safe_load import safe_load  # noqa: F401
import torch
outs = SHViT(arch='s1').eval()(torch.randn(1, 3, 64, 64))
assert [tuple(o.shape) for o in outs] == [(1, 128, 4, 4), (1, 224, 2, 2), (1, 320, 1, 1)]
from mmengine.registry import MODELS
assert MODELS.get('SHViT') is SHViT
import shvit_mm
assert not hasattr(shvit_mm, 'detection') and not hasattr(shvit_mm, 'segmentation')
print('core-ok')
'''
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and 'core-ok' in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_one_class_built_by_every_codebase():
    import shvit_mm  # noqa: F401
    from mmdet.registry import MODELS as DET
    from mmengine.registry import MODELS as ROOT, DefaultScope
    from mmpretrain.registry import MODELS as CLS
    from mmseg.registry import MODELS as SEG

    from shvit_mm.models.backbones import SHViT
    for scope, registry in (('mmdet', DET), ('mmseg', SEG), ('mmpretrain', CLS)):
        with DefaultScope.overwrite_default_scope(scope):
            model = registry.build(dict(type='SHViT', arch='s1', out_indices=(1, 2)))
        assert type(model) is SHViT and model.out_indices == [1, 2], scope
        assert 'SHViT' not in registry.module_dict, f'a copy is registered in {scope}'
    assert ROOT.module_dict['SHViT'] is SHViT  # registered once, in MMEngine's root registry


def test_codebase_models_with_shvit_backbones():
    """A whole model of each codebase builds with ``type='SHViT'`` from its own scope."""
    from shvit_mm.apis.config import build_model
    from shvit_mm.models.backbones import SHViT
    det = build_model(osp.join(REPO_ROOT, 'configs/mask_rcnn/shvit_s1.py'))
    assert type(det.backbone) is SHViT and type(det).__module__.startswith('mmdet.')

    from mmengine.config import Config
    cls_cfg = Config(dict(
        default_scope='mmpretrain',
        model=dict(type='ImageClassifier', backbone=dict(type='SHViT', arch='s1', out_indices=(2,)),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='SHViTClsHead', num_classes=10, in_channels=320))))
    cls = build_model(cls_cfg)
    assert type(cls.backbone) is SHViT and type(cls).__module__.startswith('mmpretrain.')
    assert cls(torch.randn(2, 3, 64, 64), mode='tensor').shape == (2, 10)


def _module_name(path):
    rel = osp.relpath(path, REPO_ROOT)[:-3].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _import_graph():
    """shvit_mm module -> the shvit_mm modules it imports (at any depth: module level or inside
    functions, since a cycle dodged by a function-level import is still a cycle)."""
    files = {}
    for d, _, names in os.walk(PACKAGE):
        for n in names:
            if n.endswith('.py'):
                files[_module_name(osp.join(d, n))] = osp.join(d, n)
    graph = {}
    for mod, path in files.items():
        is_pkg = path.endswith('__init__.py')
        package = mod if is_pkg else mod.rpartition('.')[0]
        edges = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    parts = package.split('.')
                    parts = parts[:len(parts) - node.level + 1]
                    base = '.'.join(parts + ([base] if base else []))
                targets = [base] + [f'{base}.{a.name}' for a in node.names]
            for t in targets:
                if t in files and t != mod:
                    edges.add(t)
        graph[mod] = edges
    return graph


def test_no_import_cycle_in_shvit_mm():
    graph = _import_graph()
    assert 'shvit_mm.models.backbones.shvit' in graph and len(graph) > 20
    _check_acyclic(graph)


def test_import_cycle_detector_finds_a_cycle(tmp_path, monkeypatch):
    """The detector itself works: a two-module cycle is reported."""
    pkg = tmp_path / 'shvit_mm'
    pkg.mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'a.py').write_text('from . import b\n')
    (pkg / 'b.py').write_text('def f():\n    from shvit_mm import a\n')
    monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', str(pkg))
    monkeypatch.setattr(sys.modules[__name__], 'REPO_ROOT', str(tmp_path))
    graph = _import_graph()
    assert 'shvit_mm.b' in graph['shvit_mm.a'] and 'shvit_mm.a' in graph['shvit_mm.b']
    with pytest.raises(pytest.fail.Exception, match='import cycle'):
        _check_acyclic(graph)


def _check_acyclic(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                pytest.fail('import cycle: ' + ' -> '.join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node)
