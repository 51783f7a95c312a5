"""Demo data creation killed half-way leaves nothing behind on the next creation, and the data are
written with the umask's modes (not tempfile's 0700)."""
import os
import os.path as osp
import signal
import socket
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# Runs make_demo_dataset (and make_demo_label_maps) under a given umask; with 'die' the process
# SIGKILLs itself once the train split is written, inside the creation. shvit_mm.datasets is
# imported without shvit_mm/__init__.py (which registers the codebases' parts, seconds of imports).
_CREATE = '''
import os, signal, sys, types
pkg = types.ModuleType('shvit_mm')
pkg.__path__ = [sys.argv[1]]
sys.modules['shvit_mm'] = pkg
from shvit_mm.datasets import demo_data, make_demo_label_maps
root, umask, die = sys.argv[2], int(sys.argv[3], 8), sys.argv[4] == 'die'
os.umask(umask)
if die:
    make_split = demo_data._make_split
    def make_split_then_die(*args):
        make_split(*args)
        os.kill(os.getpid(), signal.SIGKILL)
    demo_data._make_split = make_split_then_die
make_demo_label_maps(demo_data.make_demo_dataset(root, num_train=2, num_val=1, min_side=64,
                                                 max_side=64, verbose=False), verbose=False)
'''


def _create(root, umask=0o022, die=False):
    return subprocess.run([sys.executable, '-c', _CREATE, osp.join(REPO_ROOT, 'shvit_mm'),
                           str(root), oct(umask), 'die' if die else 'live'],
                          capture_output=True, text=True, timeout=300)


def test_killed_creation_leaves_no_staging_folder(tmp_path):
    killed = _create(tmp_path / 'demo', die=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    left = [p for p in os.listdir(tmp_path) if p.startswith('.demo.tmp-')]
    assert len(left) == 1 and not (tmp_path / 'demo').exists()  # the kill left a staging folder
    # a concurrent creator's staging folder (its process is alive) must survive the clean-up
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])
    try:
        busy = f'.demo.tmp-{socket.gethostname()}-{sleeper.pid}-busy'
        (tmp_path / busy).mkdir()
        done = _create(tmp_path / 'demo')
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(os.listdir(tmp_path)) == sorted(['demo', busy])
        assert (tmp_path / 'demo' / 'meta.json').is_file()
        assert not [p for p in os.listdir(tmp_path / 'demo') if '.tmp-' in p]
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize('umask', [0o022, 0o077], ids=['022', '077'])
def test_demo_data_honour_the_umask(tmp_path, umask):
    done = _create(tmp_path / 'demo', umask=umask)
    assert done.returncode == 0, done.stderr[-3000:]
    modes = {}
    for d, dirs, files in os.walk(tmp_path / 'demo'):
        for name in [''] + dirs + files:
            path = osp.join(d, name)
            modes[osp.relpath(path, tmp_path)] = os.stat(path).st_mode & 0o777
    want = {p: (0o777 if osp.isdir(osp.join(tmp_path, p)) else 0o666) & ~umask for p in modes}
    assert {'demo', 'demo/seg_maps', 'demo/train/000000.jpg'} <= set(modes)
    assert modes == want
