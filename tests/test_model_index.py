"""model-index.yml, the model index `mim search shvit_mm` reads: every metafile it imports is in
OpenMMLab's format, names a README and configs that exist, and each config builds a model with the
parameter count its entry states; every config under configs/ has an entry."""
import glob
import os.path as osp

import pytest
import yaml

from conftest import REPO_ROOT


def _yaml(rel):
    with open(osp.join(REPO_ROOT, rel)) as f:
        return yaml.safe_load(f)


METAFILES = _yaml('model-index.yml')['Import']
ENTRIES = [(mf, m) for mf in METAFILES for m in _yaml(mf)['Models']]


@pytest.mark.parametrize('metafile', METAFILES)
def test_metafile_format(metafile):
    meta = _yaml(metafile)
    family = osp.dirname(metafile)
    collections = {c['Name']: c for c in meta['Collections']}
    for c in collections.values():
        assert c['README'] == f'{family}/README.md' and osp.isfile(osp.join(REPO_ROOT, c['README']))
        assert c['Paper']['URL'].startswith('https://') and c['Paper']['Title']
        assert c['Code']['URL'].startswith('https://')
        assert c['Metadata']['Training Data']
    for m in meta['Models']:
        assert m['In Collection'] in collections, m['Name']
        assert osp.dirname(m['Config']) == family, m['Name']
        for result in m.get('Results', []):
            assert result['Task'] and result['Dataset'] and result['Metrics'], m['Name']
        if 'Weights' in m:
            assert m['Weights'].startswith('https://'), m['Name']


def test_names_are_unique_and_every_config_has_an_entry():
    names = [m['Name'] for _, m in ENTRIES]
    assert len(names) == len(set(names))
    configs = sorted(osp.relpath(p, REPO_ROOT) for p in glob.glob(
        osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True) if '_base_' not in p and '_deploy_' not in p)
    assert sorted(m['Config'] for _, m in ENTRIES) == configs


@pytest.fixture(scope='module')
def read_metafiles_once():
    """For every `mmdet::` / `mmseg::` base of every config, MMEngine reads the codebase's whole
    model index (about 500 YAML files for MMDetection, over a second); read each file once here."""
    import functools

    from mmengine.config import utils
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, 'load', functools.lru_cache(maxsize=None)(utils.load))
        yield


@pytest.mark.parametrize('entry', [m for _, m in ENTRIES], ids=lambda m: m['Name'])
def test_entry_config_builds(entry, read_metafiles_once):
    """The config exists, its README names it, it asks for the ImageNet weights of its own SHViT
    variant, and it builds on the CPU (no weights downloaded) into a model of the stated size."""
    from shvit_mm.apis.config import build_model, read_config
    path = osp.join(REPO_ROOT, entry['Config'])
    with open(osp.join(osp.dirname(path), 'README.md')) as f:
        assert osp.basename(path) in f.read()
    cfg = read_config(path)
    backbone = cfg.model.backbone
    if backbone.type == 'SHViT' and backbone.init_cfg:
        assert backbone.init_cfg.checkpoint.endswith(f'/shvit_{backbone.arch}.pth')
    model = build_model(cfg, init=False)
    stated = entry['Metadata'].get('Parameters (M)')
    if stated is not None:
        assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == stated


@pytest.mark.slow
def test_wheel_carries_what_mim_reads(tmp_path):
    """A wheel built from the checkout holds model-index.yml, every config (with the READMEs and
    metafiles) and the tools under shvit_mm/.mim, where `mim search/train/test/run` look."""
    import shutil
    import subprocess
    import sys
    import zipfile
    src = tmp_path / 'src'
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        '.git', 'data', 'work_dirs', 'build', '*.egg-info', '__pycache__', '.mim'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                    '-w', str(tmp_path / 'dist'), str(src)], check=True)
    wheel, = (tmp_path / 'dist').glob('shvit_mm-*.whl')
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {'model-index.yml', 'tools/train.py', 'tools/test.py', 'tools/dist_train.sh'}
    wanted |= {m['Config'] for _, m in ENTRIES} | set(METAFILES)
    wanted |= {osp.join(osp.dirname(mf), 'README.md') for mf in METAFILES}
    wanted |= {osp.relpath(p, REPO_ROOT) for p in glob.glob(
        osp.join(REPO_ROOT, 'configs', '_base_', '**', '*.py'), recursive=True)}
    assert not {f'shvit_mm/.mim/{p}' for p in wanted} - shipped
