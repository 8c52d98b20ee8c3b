"Distributed training: `accelerate launch` with two CPU processes (gloo backend, loopback only) on tiny synthetic data"
import os, subprocess, sys, socket, time
from pathlib import Path
import pandas as pd
import pytest
from conftest import run

BIN = Path(sys.executable).parent

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _env():
    env = {**os.environ, 'MPLBACKEND': 'Agg', 'MASTER_ADDR': '127.0.0.1', 'GLOO_SOCKET_IFNAME': 'lo',
           'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '', 'PYTHONUNBUFFERED': '1'}
    for k in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'): env.pop(k, None)
    return env

@pytest.fixture(scope='module')
def tiny_cache(tmp_path_factory):
    d = tmp_path_factory.mktemp('dist')
    run('lits-synth', d/'data', '--n-cases', 4, '--size', '48x48x16', '--seed', 3)
    run('lits-prepare', d/'data', d/'cache')
    return d/'cache'

def launch(*args, tmp, timeout=300):
    cmd = [str(BIN/'accelerate'), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
           '--dynamo_backend', 'no', '--main_process_ip', '127.0.0.1', '--main_process_port', str(_free_port()),
           str(BIN/'lits-train'), *map(str, args)]
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=tmp)
    print(f"{' '.join(cmd[1:])}: {time.time()-t:.1f}s")
    assert p.returncode==0, f"exit {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-8000:]}"
    return p

def test_two_cpu_processes(tiny_cache, tmp_path):
    out = tmp_path/'run'
    p = launch(tiny_cache, '--arch', 'smp:Unet', '--encoder', 'resnet18', '--pretrained', 'no', '--epochs', 1, '--size', 32,
               '--bs', 4, '--valid-cases', '3', '--out', out, tmp=tmp_path)
    assert p.stdout.count('model file:')==1, p.stdout                 # only rank 0 reports
    assert 'distributed training: 2 processes (gloo)' in p.stdout, p.stdout  # a real process group, not 2 lone runs
    assert sorted(o.name for o in out.iterdir())==['checkpoints', 'curves.png', 'history.csv', 'model.safetensors']
    assert len(list(out.glob('*.safetensors')))==1
    h = pd.read_csv(out/'history.csv')
    assert len(h)==1 and h['epoch'].tolist()==[0], h                   # one header, one epoch: no second writer
    assert sorted(o.name for o in (out/'checkpoints').iterdir())==['best.pth', 'last.pth']
    from lits_fastai.learner import load_model_file, resume_from
    model, c = load_model_file(out/'model.safetensors')
    assert c['arch']=='smp:Unet:resnet18' and c['valid_cases']==['3']
    import torch
    st = torch.load(out/'checkpoints'/'last.pth', map_location='cpu', weights_only=False)
    assert not any(k.startswith('module.') for k in st['model'])       # resumable by a single process too
