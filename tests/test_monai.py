"The MONAI baselines end to end: `lits-compare --archs monai:...` on the phantom, the model files they leave, and the one line a user without MONAI gets"
import subprocess, sys
import nibabel as nib, pandas as pd, pytest
from conftest import run

pytest.importorskip('monai')

ARCHS = ['monai:SegResNet', 'monai:AttentionUnet']   # one 3D (DynTransNet's table), one 2D (CAFCT-Net's)


def test_compare_monai_baselines(synth_data, synth_cache, tmp_path):
    "lits-compare trains a 3D and a 2D MONAI baseline at a tiny size; their model files rebuild as lits-predict rebuilds them"
    out = tmp_path/'cmp'
    run('lits-compare', synth_cache, '--archs', ','.join(ARCHS), '--light', '--epochs', 1, '--size', 32, '--bs', 2,
        '--max-cases', 4, '--test-cases', '5', '--valid-cases', '2', '--pretrained', 'no', '--n-boot', 50, '--out', out, timeout=600)
    table = pd.read_csv(out/'compare.csv')
    assert table['system'].tolist() == ARCHS and table['n_cases'].tolist() == [1, 1]
    from lits_fastai.modelfile import load_model_file
    from lits_fastai.inference import predict_volume
    vol = next(synth_data.glob('volume_pt*/volume-5.nii'))
    for arch, dims, target in [('monai:SegResNet', 3, 'liver'), ('monai:AttentionUnet', 2, 'tumor')]:
        m, c = load_model_file(out/'systems'/arch.replace(':', '_')/'fold_0'/'run'/'model.safetensors')   # what lits-predict does
        assert (c['arch'], c['dims'], c['target'], c['model_kwargs']['n_out']) == (arch, dims, target, 1)
        assert type(m).__module__.startswith('monai.')
        assert predict_volume((m, c), vol, post=False).shape == nib.load(vol).shape


BLOCK = """
import sys, importlib.abc
class NoMonai(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'monai' or name.startswith('monai.'): raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoMonai())
"""

def test_missing_monai_is_one_line():
    "Without MONAI, building a MONAI baseline says in one line how to install it (as an error, and as a command line prints it)"
    code = BLOCK + """import lits_fastai.core   # first, as every module of the package: it quiets a torch warning fastai raises
from lits_fastai.cli import cli_errors
from lits_fastai.models import build_model, MODEL_INFO
print(MODEL_INFO['monai:SegResNet']['dims'])
try: build_model('monai:SegResNet')
except ImportError as e: print(e)
with cli_errors('lits-train'): build_model('monai:UNETR')
"""
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert p.stdout.splitlines() == ['3', 'monai:SegResNet needs MONAI: pip install lits_fastai[monai]'], p.stderr
    assert p.returncode == 1 and p.stderr.strip().splitlines() == ['lits-train: monai:UNETR needs MONAI: pip install lits_fastai[monai]'], p.stderr
