import os, subprocess, sys, shutil
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')

def run(*args, ok=True, timeout=600, **kw):
    "Run an installed lits-* command line; return the CompletedProcess"
    exe = shutil.which(args[0]) or str(Path(sys.executable).parent/args[0])
    p = subprocess.run([exe, *map(str, args[1:])], capture_output=True, text=True, timeout=timeout, **kw)
    if ok is True and p.returncode != 0: raise AssertionError(f"{args} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    if ok is False and p.returncode == 0: raise AssertionError(f"{args} should have failed\n{p.stdout}\n{p.stderr}")
    return p

@pytest.fixture(scope='session')
def synth_data(tmp_path_factory):
    "Six small synthetic LiTS cases in the Kaggle layout, made by the lits-synth command"
    d = tmp_path_factory.mktemp('synth')/'data'
    run('lits-synth', d, '--n-cases', 6, '--seed', 1, '--size', '64x64x20')
    return d

@pytest.fixture(scope='session')
def synth_cache(synth_data, tmp_path_factory):
    c = tmp_path_factory.mktemp('cache')/'cache'
    run('lits-prepare', synth_data, c)
    return c
