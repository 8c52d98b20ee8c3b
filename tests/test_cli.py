"End-to-end tests of the installed command lines, on synthetic data in temporary folders"
import json, re, numpy as np, nibabel as nib, pandas as pd
from pathlib import Path
from conftest import run


def test_synth_writes_kaggle_layout(synth_data):
    vols = sorted(synth_data.glob('volume_pt*/volume-*.nii'))
    segs = sorted((synth_data/'segmentations').glob('segmentation-*.nii'))
    assert len(vols) == len(segs) == 6
    img, seg = nib.load(vols[0]), nib.load(synth_data/'segmentations'/vols[0].name.replace('volume', 'segmentation'))
    assert img.get_data_dtype() == np.int16 and seg.shape == img.shape
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}


def test_prepare_manifest_counts_match_nifti(synth_data, synth_cache):
    man = pd.read_csv(synth_cache/'manifest.csv', dtype={'case': str})
    assert set(man['case']) == {str(i) for i in range(6)}
    for case in ['0', '3']:
        seg = nib.as_closest_canonical(nib.load(synth_data/'segmentations'/f'segmentation-{case}.nii'))
        lab = np.asarray(seg.dataobj)
        rows = man[man['case'] == case].sort_values('slice')
        # canonical slices lie on the last axis; counts per slice do not depend on in-plane orientation
        assert rows['liver_px'].tolist() == [(lab[:, :, z] == 1).sum() for z in range(lab.shape[2])]
        assert rows['tumor_px'].tolist() == [(lab[:, :, z] == 2).sum() for z in range(lab.shape[2])]


def test_prepare_rerun_is_idempotent(synth_data, synth_cache):
    before = {p: p.stat().st_mtime_ns for p in synth_cache.rglob('*.npy')}
    run('lits-prepare', synth_data, synth_cache)
    assert before == {p: p.stat().st_mtime_ns for p in synth_cache.rglob('*.npy')}


def test_prepare_names_a_truncated_volume_and_caches_the_rest(synth_data, tmp_path):
    data = tmp_path/'data'
    (data/'segmentations').mkdir(parents=True)
    for v in sorted(synth_data.glob('volume_pt*/volume-*.nii'))[:3]:
        (data/v.name).write_bytes(v.read_bytes())
        s = synth_data/'segmentations'/v.name.replace('volume', 'segmentation')
        (data/'segmentations'/s.name).write_bytes(s.read_bytes())
    bad = sorted(data.glob('volume-*.nii'))[0]
    bad.write_bytes(bad.read_bytes()[:bad.stat().st_size//3])
    p = run('lits-prepare', data, tmp_path/'cache', ok=False)
    lines = [l for l in p.stderr.splitlines() if bad.name in l]
    assert len(lines) == 1 and 'Traceback' not in p.stderr, p.stderr
    man = pd.read_csv(tmp_path/'cache'/'manifest.csv', dtype={'case': str})
    assert sorted(man['case'].unique()) == sorted(v.name[7:-4] for v in data.glob('volume-*.nii') if v != bad)


def test_train_predict_evaluate(synth_data, synth_cache, tmp_path):
    out = tmp_path/'run'
    run('lits-train', synth_cache, '--arch', 'ltnet', '--encoder', 'resnet18', '--epochs', 1, '--size', 32, '--bs', 8,
        '--valid-cases', '4,5', '--pretrained', 'no', '--out', out)
    assert {'model.safetensors', 'history.csv', 'curves.png'} <= {p.name for p in out.iterdir()}
    vol = next(synth_data.glob('volume_pt*/volume-5.nii'))
    pred = tmp_path/'pred'
    p = run('lits-predict', out/'model.safetensors', vol, pred)
    mask = nib.load(pred/'segmentation-5.nii')
    src = nib.load(vol)
    assert mask.shape == src.shape and np.allclose(mask.affine, src.affine)
    assert mask.get_data_dtype() == np.uint8
    run('lits-evaluate', pred, synth_data/'segmentations', '--out', tmp_path/'metrics.csv')
    per_case = pd.read_csv(tmp_path/'metrics.csv', dtype={'case': str})
    assert set(per_case['case']) == {'5'} and per_case['dice'].between(0, 1).all()


def test_auto_plans_on_training_cases_trains_to_a_budget_and_replays_in_the_scans_geometry(synth_data, synth_cache, tmp_path):
    "lits-plan fits the plan on the training cases; lits-train --arch auto trains it within a budget into a model file that carries it; lits-predict replays it on a scan"
    run('lits-plan', synth_cache, '--valid-cases', '4', '--test-cases', '5', '--out', tmp_path/'plan.json')
    plan = json.loads((tmp_path/'plan.json').read_text())
    assert (plan['train_cases'], plan['valid_cases'], plan['test_cases']) == (['0', '1', '2', '3'], ['4'], ['5'])
    run('lits-plan', synth_cache, '--valid-cases', '4', '--test-cases', '5', '--recipe', '{"spacing": 3.5, "context": 1}',
        '--out', tmp_path/'fixed.json')
    fixed = json.loads((tmp_path/'fixed.json').read_text())['choices']
    assert (fixed['spacing']['value'], fixed['context']['value']) == (3.5, 1) and fixed['spacing']['why'].startswith('asked for')
    assert fixed['size']['value'] <= plan['choices']['size']['value']       # a coarser pixel: the slice in fewer pixels
    out = tmp_path/'auto'
    p = run('lits-train', synth_cache, '--arch', 'auto', '--size', 32, '--valid-cases', '4', '--test-cases', '5', '--budget', '20s',
            '--recipe', '{"context": 5}', '--pretrained', 'no', '--out', out, timeout=900)
    assert re.search(r'budget 20 s \(\d+ s left\): an epoch takes about [\d.]+ s here, so \d+ epochs', p.stdout), p.stdout
    saved = json.loads((out/'plan.json').read_text())
    assert saved['choices']['context']['value'] == 5 and saved['choices']['context']['why'].startswith('asked for')
    assert saved['train_cases'] == plan['train_cases'] and saved['choices']['intensity'] == plan['choices']['intensity']
    from lits_fastai.learner import read_contract
    c = read_contract(out/'model.safetensors')
    assert c['plan']['choices'] == saved['choices'] and c['spacing'] == saved['choices']['spacing']['value'] and 'postprocess' in c
    assert c['intensity'] == saved['choices']['intensity']['value']
    vol = next(synth_data.glob('volume_pt*/volume-5.nii'))
    run('lits-predict', out, vol, tmp_path/'m.nii.gz')               # the run folder stands for its model file
    mask, src = nib.load(tmp_path/'m.nii.gz'), nib.load(vol)
    assert mask.shape == src.shape and np.allclose(mask.affine, src.affine) and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    # flips at test time: the model's choice (measured on the validation case) unless a flag overrides it
    assert isinstance(c['tta'], bool)
    run('lits-predict', out, vol, tmp_path/'same.nii.gz', '--tta' if c['tta'] else '--no-tta')
    assert np.array_equal(np.asarray(mask.dataobj), np.asarray(nib.load(tmp_path/'same.nii.gz').dataobj))


def test_tumour_stage_trains_a_cascade_that_lits_predict_replays(synth_data, synth_cache, tmp_path):
    "lits-train --arch auto --tumour-stage writes one model file holding both stages; lits-predict runs them; other archs refuse the flag"
    out = tmp_path/'cascade'
    run('lits-train', synth_cache, '--arch', 'auto', '--tumour-stage', '--epochs', 1, '--size', 32, '--valid-cases', '4',
        '--test-cases', '5', '--pretrained', 'no', '--out', out, timeout=900)
    from lits_fastai.learner import read_contract
    c = read_contract(out/'model.safetensors')
    assert c['box'] == 10 and c['locator']['dims'] == 2 and (out/'tumour'/'history.csv').exists()
    vol = next(synth_data.glob('volume_pt*/volume-5.nii'))
    run('lits-predict', out, vol, tmp_path/'m.nii.gz')
    mask, src = nib.load(tmp_path/'m.nii.gz'), nib.load(vol)
    assert mask.shape == src.shape and np.allclose(mask.affine, src.affine) and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    p = run('lits-train', synth_cache, '--arch', 'ltnet', '--tumour-stage', ok=False)
    assert '--tumour-stage is a choice of --arch auto' in p.stderr and 'Traceback' not in p.stderr
    p = run('lits-train', synth_cache, '--arch', 'ltnet', '--dims', 3, ok=False)
    assert '--dims is a choice of --arch auto' in p.stderr and 'Traceback' not in p.stderr
    p = run('lits-train', synth_cache, '--arch', 'auto', '--dims', 4, ok=False)
    assert '--dims 4: 2 (2.5D slices) or 3 (3D patches)' in p.stderr and 'Traceback' not in p.stderr
    for args, said in ((('--arch', 'auto', '--recipe', 'ltnet'), '--arch auto plans its own recipe'),
                       (('--arch', 'auto', '--recipe', '{"spacing": 0.4'), 'not a JSON dict'),
                       (('--arch', 'auto', '--recipe', '{"spcing": 0.4}'), 'spcing: no such Recipe field'),
                       (('--arch', 'ltnet', '--recipe', '{"tumour_stage": true}'), 'a choice of --arch auto'),
                       (('--arch', 'ltnet', '--folds', 2, '--recipe', 'ltnet'), '--recipe is for one run')):
        p = run('lits-train', synth_cache, *args, ok=False)
        assert said in p.stderr and 'Traceback' not in p.stderr, (args, p.stderr)


def test_train_rejects_a_missing_folder(tmp_path):
    p = run('lits-train', tmp_path/'nowhere', ok=False)
    assert 'nowhere' in p.stderr and 'Traceback' not in p.stderr


import pytest

@pytest.mark.parametrize('arch,size,extra', [
    ('ltnet', 64, ['--encoder', 'resnet18']), ('hybrid', 64, []), ('cafct', 64, []), ('dyntransnet2d', 64, []), ('smp:Unet', 64, ['--encoder', 'resnet18']),
    ('unet3d', 32, []), ('dyntransnet', 32, [])])
def test_every_architecture_trains_one_epoch(arch, size, extra, synth_cache, tmp_path):
    "Each registered system trains one epoch through lits-train and writes a model file that loads in a fresh process"
    out = tmp_path/arch.replace(':', '_')
    run('lits-train', synth_cache, '--arch', arch, '--epochs', 1, '--size', size, '--max-cases', 3, '--valid-cases', '5',
        '--bs', 2, '--pretrained', 'no', '--out', out, *extra, timeout=900)
    hist = pd.read_csv(out/'history.csv')
    assert len(hist) == 1 and np.isfinite(hist['train_loss']).all()
    import subprocess, sys
    code = f"from lits_fastai.learner import load_model_file; m,c = load_model_file({str(out/'model.safetensors')!r}); print(c['arch'])"
    expect = f"{arch}:{extra[1]}" if arch.startswith('smp:') and extra else arch   # --encoder completes an smp name
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()[-1] == expect


def test_compare_two_architectures(synth_cache, tmp_path):
    "lits-compare trains two systems on one three-way split and writes the tables, the plot, the report and one ensemble per system"
    out = tmp_path/'cmp'
    args = ['--archs', 'ltnet,cafct', '--light', '--epochs', 1, '--size', 32, '--bs', 8, '--max-cases', 4, '--test-cases', '5',
            '--valid-cases', '2', '--pretrained', 'no', '--n-boot', 100, '--out', out]
    p = run('lits-compare', synth_cache, *args, timeout=900)
    assert {'compare.md', 'compare.csv', 'compare.png', 'report.html', 'split.json'} <= {o.name for o in out.iterdir()}, p.stdout
    table = pd.read_csv(out/'compare.csv')
    assert table['system'].tolist() == ['ltnet', 'cafct'] and table['n_cases'].tolist() == [1, 1]
    (f,) = json.loads((out/'split.json').read_text())['folds']
    assert (f['test'], f['valid'], len(f['train'])) == (['5'], ['2'], 2) and not {'2', '5'} & set(f['train'])
    md = (out/'compare.md').read_text()
    assert '| ltnet |' in md and '| cafct |' in md and 'too few paired cases for a test (n=1 < 6)' in md   # they share the tumour class
    assert (out/'compare.png').read_bytes()[:4] == b'\x89PNG'
    for s in ('ltnet', 'cafct'): assert (out/'systems'/s/'ensemble'/'ensemble.json').exists()
    again = run('lits-compare', synth_cache, *args)
    assert again.stdout.count('skipped, finished already') == 2, again.stdout


def test_train_one_fold_of_a_cross_validation(synth_cache, tmp_path):
    "lits-train --folds K --fold k trains fold k of one system as one job (held-out fold, inner validation) and names the folds still missing"
    out = tmp_path/'cv'
    p = run('lits-train', synth_cache, '--arch', 'smp:Linknet', '--encoder', 'mobilenet_v2', '--folds', 2, '--fold', 0, '--epochs', 1,
            '--size', 32, '--bs', 4, '--pretrained', 'no', '--out', out, timeout=900)
    sdir = out/'systems'/'smp_Linknet_mobilenet_v2'
    res = json.loads((sdir/'fold_0'/'result.json').read_text())
    (f0, f1) = json.loads((out/'split.json').read_text())['folds']
    assert set(res['train_config']['train_cases']) == set(f0['train']) and not set(f0['test']) & set(f0['train'] + f0['valid'])
    assert not (sdir/'fold_1').exists() and not (sdir/'ensemble').exists()
    assert 'fold(s) 1 not finished' in p.stdout and '--fold 1' in p.stdout
    assert set(pd.read_csv(sdir/'oof_metrics.csv', dtype={'case': str})['case']) == set(f0['test'])


def test_train_logs_to_tensorboard_and_names_a_missing_tracker(synth_cache, tmp_path):
    "lits-train --log tensorboard writes event files holding every epoch's losses; a tracker that is not installed is one line"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path/'run'
    run('lits-train', synth_cache, '--arch', 'smp:Linknet', '--encoder', 'mobilenet_v2', '--epochs', 2, '--size', 32, '--bs', 4,
        '--pretrained', 'no', '--valid-cases', '2', '--out', out, '--log', 'tensorboard', timeout=900)
    ea = EventAccumulator(str(out/'tensorboard'/'run')).Reload()
    hist = pd.read_csv(out/'history.csv')
    for name in ('train_loss', 'valid_loss'):
        assert [round(e.value, 4) for e in ea.Scalars(f'epoch/{name}')] == [round(v, 4) for v in hist[name]]
    p = run('lits-train', synth_cache, '--arch', 'smp:Linknet', '--log', 'nosuchtracker', '--out', tmp_path/'r2', ok=False)
    assert p.stderr.strip().splitlines()[-1].startswith('lits-train: --log nosuchtracker: unknown tracker') and 'Traceback' not in p.stderr


COMMANDS = ['lits-synth', 'lits-prepare', 'lits-plan', 'lits-train', 'lits-predict', 'lits-evaluate', 'lits-compare', 'lits-demo', 'lits-export']

@pytest.mark.parametrize('cmd', COMMANDS)
def test_help_is_quiet_and_dashed(cmd):
    p = run(cmd, '--help')
    assert p.stderr == '', p.stderr                       # no third-party warning (torch.jit.script) above the help
    assert p.stdout.startswith(f'usage: {cmd}')
    longs = re.findall(r'--[A-Za-z][\w-]*', p.stdout)
    assert longs and not [o for o in longs if '_' in o], longs   # one spelling: --valid-cases, --no-post


def test_options_accept_both_spellings(tmp_path):
    for opt in ('--n-cases', '--n_cases'):
        run('lits-synth', tmp_path/opt, opt, 1, '--size', '32x32x8')
        assert len(list((tmp_path/opt).glob('volume_pt*/volume-*.nii'))) == 1
    for opt in ('--valid-cases', '--valid_cases'):   # parsed, then the missing folder is reported
        p = run('lits-train', tmp_path/'nowhere', opt, '1', ok=False)
        assert 'nowhere' in p.stderr and 'unrecognized' not in p.stderr


def test_progress_in_a_pipe_prints_plain_lines(synth_data, synth_cache, tmp_path):
    p = run('lits-prepare', synth_data, tmp_path/'cache')
    assert '\r' not in p.stdout + p.stderr
    p = run('lits-train', synth_cache, '--arch', 'ltnet', '--encoder', 'resnet18', '--epochs', 1, '--size', 32, '--bs', 8,
            '--max-cases', 3, '--pretrained', 'no', '--out', tmp_path/'run')
    assert '\r' not in p.stdout + p.stderr and 'epoch' in p.stdout


@pytest.mark.parametrize('kind,args', [
    ('2.5D auto: plan, oversampling, augmentation', ['--arch', 'auto', '--size', 32, '--epochs', 2, '--bs', 4]),
    ('2D hybrid: albumentations', ['--arch', 'hybrid', '--size', 32, '--epochs', 1, '--bs', 4]),
    ('3D U-Net: random patches, 3D augmentation', ['--arch', 'unet3d', '--size', 32, '--epochs', 1, '--bs', 2]),
    ('3D auto: the plan\'s 3D patches, flips chosen', ['--arch', 'auto', '--dims', 3, '--size', 32, '--epochs', 1])],
    ids=lambda o: o.split(':')[0] if isinstance(o, str) else None)
def test_same_seed_same_model_file(kind, args, synth_cache, tmp_path):
    "The same lits-train command run twice (fresh processes, other hash seeds) writes the same model file, byte for byte"
    import os
    files = []
    for h in ('1', '2'):
        out = tmp_path/f'run{h}'
        run('lits-train', synth_cache, *args, '--max-cases', 4, '--valid-cases', '5', '--pretrained', 'no', '--seed', 3,
            '--out', out, env={**os.environ, 'PYTHONHASHSEED': h}, timeout=900)
        files.append((out/'model.safetensors').read_bytes())
    assert files[0] == files[1]
