"""Reliability of the command lines on tiny synthetic data: runs killed at chosen moments, full disks, unwritable
folders and damaged model files; a table of bad inputs and a seeded fuzz test through every command line;
reproducibility with one seed; no patient on both sides of any split; model files and checkpoints that would run code.

Every command line runs in its own process, as a user starts it. Where only the outcome of a command line call is
checked (its exit status, its output and the files it leaves), several calls share one process (`calls`) to save
the seconds torch and fastai take to import; an exception escaping a call is written to its output as a traceback,
exactly as the console script would print it."""
import os, sys, re, json, time, signal, resource, shutil, subprocess
from pathlib import Path
import numpy as np, nibabel as nib, pandas as pd, pytest
from lits_fastai.core import save_nifti
from lits_fastai.synth import synth_case, synth_geometry, make_synth

SHAPE = (32, 32, 8)
BIN = Path(sys.executable).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'MPLBACKEND': 'Agg', 'PYTHONHASHSEED': '0'}
# a tiny, fast system (smp's Linknet with a MobileNetV2 encoder) trained at 32x32; any registered system would do
TRAIN = ['--arch', 'smp:Linknet', '--encoder', 'mobilenet_v2', '--size', 32, '--bs', 4, '--pretrained', 'no', '--seed', 7]


# ---------------------------------------------------------------------------------------------------- helpers
def _limit_fsize(fsize):
    "preexec_fn: files the process writes may not grow past `fsize` bytes (a full disk; SIGXFSZ ignored, writes fail with EFBIG)"
    def f():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
    return f

def cli(name, *args, timeout=300, fsize=None, env=None, **kw) -> subprocess.CompletedProcess:
    "Run the installed command line `name` (exit status not checked)"
    return subprocess.run([str(BIN/name), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})}, preexec_fn=_limit_fsize(fsize) if fsize is not None else None, **kw)

def py(code, *args, timeout=300, env=None, **kw) -> subprocess.CompletedProcess:
    "Run Python `code` in a fresh process"
    return subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**ENV, **(env or {})}, **kw)

_CALLS = r'''
import sys, io, json, signal, contextlib, traceback, resource, importlib
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
res = []
for call in json.loads(sys.argv[1]):
    mod, name = call['entry'].split(':')
    main = getattr(importlib.import_module(mod), name)
    out, err, rc = io.StringIO(), io.StringIO(), 0
    lim = resource.getrlimit(resource.RLIMIT_FSIZE)
    sys.argv = [name] + call['args']
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if call.get('fsize') is not None: resource.setrlimit(resource.RLIMIT_FSIZE, (call['fsize'], lim[1]))
            try: main()
            finally: resource.setrlimit(resource.RLIMIT_FSIZE, lim)
    except SystemExit as e:
        if isinstance(e.code, str): err.write(e.code + '\n')
        rc = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    except BaseException: err.write(traceback.format_exc()); rc = 1
    res.append(dict(rc=rc, out=out.getvalue(), err=err.getvalue()))
print(json.dumps(res))
'''

def calls(entry, *arg_lists, fsize=None, timeout=600, env=None, entries=None):
    "Call the command line function `entry` ('module:function'; `entries[i]` for call i) once per argument list, all in one fresh process"
    spec = [dict(entry=(entries or {}).get(i, entry), args=[str(a) for a in args], fsize=(fsize or {}).get(i)) for i,args in enumerate(arg_lists)]
    p = py(_CALLS, json.dumps(spec), timeout=timeout, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])

def naming(text, path) -> list:
    "The lines of `text` that name the file `path` (the full path, not as the prefix of a longer name)"
    pat = re.compile(re.escape(str(path)) + r'(?![\w.-])')
    return [l for l in text.splitlines() if pat.search(l)]

def no_traceback(*texts):
    for t in texts: assert 'Traceback' not in t, t[-3000:]

def tree(d) -> dict:
    "{relative path: bytes} of every file under `d` but a lock file"
    d = Path(d)
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file() and p.name != '.lock'}

def nifti_like(d) -> list:
    "Every file under `d` a reader could take for NIfTI (hidden names too)"
    return sorted(p for p in Path(d).rglob('*') if p.is_file() and p.name.lower().endswith(('.nii', '.nii.gz')))

def tensors(fn) -> dict:
    import torch
    if str(fn).endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(str(fn))
    return torch.load(fn, map_location='cpu', weights_only=True)['model']

def assert_same_weights(a, b, eps=1e-6):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        if ta[k].is_floating_point(): assert (ta[k] - tb[k]).abs().max().item() <= eps, (k, a, b)
        else: assert (ta[k] == tb[k]).all(), (k, a, b)

def history(run) -> pd.DataFrame: return pd.read_csv(Path(run)/'history.csv').drop(columns=['time'])

def case_of(hu) -> set:
    "Case ids encoded in HU values by `_id_case` (the hundreds), ignoring the padding below -1000"
    hu = np.asarray(hu, np.float64)
    return set(np.unique(np.floor(hu[hu > -1000]/100)).astype(int).tolist())


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def work(tmp_path_factory): return tmp_path_factory.mktemp('reliability')

@pytest.fixture(scope='module')
def data(work):
    "Six small synthetic cases in the Kaggle layout"
    return make_synth(work/'data', n_cases=6, seed=1, shape=SHAPE)

@pytest.fixture(scope='module')
def cache(work, data):
    p = cli('lits-prepare', data, work/'cache')
    assert p.returncode == 0, p.stderr
    return work/'cache'

@pytest.fixture(scope='module')
def run_a(work, cache):
    "A two-epoch lits-train run: the reference of the resume and reproducibility tests, and the model of the predict tests"
    out = work/'run_a'
    p = cli('lits-train', cache, *RUN_ARGS, '--out', out)
    assert p.returncode == 0, p.stderr[-3000:]
    return out

@pytest.fixture(scope='module')
def model(run_a): return run_a/'model.safetensors'

@pytest.fixture(scope='module')
def volumes(work, data):
    "Eight volumes to segment (slightly larger than the others, so that an interruption lands in the middle of the run)"
    d = work/'to_predict'
    for i in range(8):
        img, _, spc = synth_case((9, i), shape=(64, 64, 24))
        save_nifti(img, d/f'volume-{i}.nii', synth_geometry((64, 64, 24), spc, 'LPS'), dtype=np.int16)
    return d

@pytest.fixture(scope='module')
def pred_ref(work, model, volumes):
    out = work/'pred_ref'
    p = cli('lits-predict', model, volumes, out)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


# ============================================================================================ 1. faults
_KILL_PREPARE = r'''
import os, sys, signal
import lits_fastai.cache as C
from lits_fastai import core
where, k = os.environ['KILL_WHERE'], int(os.environ['KILL_K'])
n = [0]                                              # files committed so far
_replace = os.replace
def replace(a, b):                                   # killed just before the k-th file is committed ...
    if where == 'commit' and n[0] + 1 == k: os.kill(os.getpid(), signal.SIGKILL)
    _replace(a, b); n[0] += 1
core.os.replace = replace
_write = C._write_stack
def write_stack(fn, can, dtype, fix=None):          # ... or half-way through the stack written after k commits
    def half(blk, z0):
        if where == 'stack' and z0 and n[0] == k: os.kill(os.getpid(), signal.SIGKILL)
        return fix(blk, z0) if fix else blk
    C._BLOCK = can.shape[0]*can.shape[1]*can.dtype.itemsize*2   # two slices per block
    return _write(fn, can, dtype, half)
C._write_stack = write_stack
sys.argv = ['lits-prepare', sys.argv[1], sys.argv[2], '--n-workers', '0']
from lits_fastai.cli import lits_prepare
lits_prepare()
'''

# cache.json, then 6 cases x 4 files (label.npy, image.npy, fg_sample.npy, meta.json) are committed, then manifest.csv and cases.csv
KILLS = [('stack', 1), ('commit', 4), ('stack', 6), ('commit', 14), ('commit', 25), ('commit', 27)]

@pytest.mark.parametrize('where,k', KILLS)
def test_prepare_killed_at_any_point_resumes_to_identical_cache(work, data, cache, where, k):
    "lits-prepare killed (SIGKILL) just before its k-th file is committed, or half-way through a stack, then rerun: the cache of an uninterrupted run"
    c = work/f'killed_prepare_{where}_{k}'
    p = py(_KILL_PREPARE, data, c, env={'KILL_WHERE': where, 'KILL_K': str(k)})
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert (c/'manifest.csv').exists() == ((where, k) == ('commit', 27))     # no manifest before every case is complete
    r = cli('lits-prepare', data, c)
    assert r.returncode == 0, r.stderr
    assert not list(c.rglob('*.part'))
    assert tree(c) == tree(cache)

def test_prepare_with_workers_killed_mid_run_resumes_to_identical_cache(work, data, cache):
    "lits-prepare with 2 worker processes, the whole process group killed after k cases are complete"
    big = make_synth(work/'data_big', n_cases=6, seed=1, shape=(96, 96, 24))
    ref = work/'cache_big'
    assert cli('lits-prepare', big, ref).returncode == 0
    states = []
    for k in (1, 3):
        c = work/f'killed_workers_{k}'
        p = subprocess.Popen([str(BIN/'lits-prepare'), str(big), str(c), '--n-workers', '2'], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
        t0 = time.time()
        while p.poll() is None and len(list(c.glob('cases/*/meta.json'))) < k and time.time() - t0 < 60: time.sleep(0.002)
        os.killpg(p.pid, signal.SIGKILL); p.wait()
        states.append(len(list(c.glob('cases/*/meta.json'))))
        r = cli('lits-prepare', big, c)
        assert r.returncode == 0, r.stderr
        assert tree(c) == tree(ref)
    assert any(s < 6 for s in states), states       # at least one kill landed before the end

_KILL = r'''
import os, sys, signal, importlib
import lits_fastai.train as T
from fastai.callback.core import Callback
where, entry = sys.argv[1], sys.argv[2]        # kill the training whose run folder contains `where`; the command line to run
class _Kill(Callback):
    "SIGKILL this process after batch 2 of the second epoch"
    order = 100
    def after_batch(self):
        if self.training and self.epoch == 1 and self.iter == 1: os.kill(os.getpid(), signal.SIGKILL)
_build = T.build_learner
def build_learner(*a, **k):
    learn = _build(*a, **k)
    if where in str(learn.path): learn.add_cb(_Kill())
    return learn
T.build_learner = build_learner
mod, name = entry.split(':')
sys.argv = [name] + sys.argv[3:]
getattr(importlib.import_module(mod), name)()
'''

RUN_ARGS = [*TRAIN, '--epochs', 2, '--valid-pct', 0.34]     # run_a, run_b and the killed run

@pytest.fixture(scope='module')
def killed_run(work, cache):
    "lits-train SIGKILLed after batch 2 of its second epoch (it resumes in `train_calls`)"
    out = work/'run_killed'
    p = py(_KILL, '', 'lits_fastai.cli:lits_train', cache, *RUN_ARGS, '--out', out)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert len(pd.read_csv(out/'history.csv')) == 1 and not (out/'model.safetensors').exists()   # killed inside epoch 2
    return out

def test_train_killed_mid_epoch_resumes_to_the_same_weights(run_a, killed_run, train_calls):
    "lits-train killed in the middle of epoch 2, then `--resume`: weights, log and metrics equal the uninterrupted run to 1e-6"
    out, r = killed_run, train_calls['resume']
    no_traceback(r['err'])
    assert r['rc'] == 0, r['err'][-3000:]
    assert_same_weights(out/'model.safetensors', run_a/'model.safetensors')
    assert_same_weights(out/'checkpoints'/'last.pth', run_a/'checkpoints'/'last.pth')         # the last epoch, best or not
    ha, hb = history(run_a), history(out)
    assert list(ha.columns) == list(hb.columns) and len(hb) == 2
    np.testing.assert_allclose(hb.to_numpy(float), ha.to_numpy(float), atol=1e-6, rtol=0)

_KILL_PREDICT = r'''
import os, sys, signal
import nibabel.arraywriters as aw
signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal: a shell's background job inherits SIGINT ignored
kill_at, n = int(os.environ['KILL_AT']), [0]
_write = aw.array_to_file
def array_to_file(data, fileobj, *a, **k):
    n[0] += 1
    if n[0] == kill_at:                              # the header and some of the voxels are out, then SIGKILL
        fileobj.write(bytes(1000)); getattr(getattr(fileobj, 'fobj', fileobj), 'flush', lambda: None)(); os.kill(os.getpid(), getattr(signal, os.environ.get('KILL_SIG', 'SIGKILL')))
    return _write(data, fileobj, *a, **k)
aw.array_to_file = array_to_file
from lits_fastai.cli import lits_predict
sys.argv = ['lits-predict'] + sys.argv[1:]
lits_predict()
'''

def _only_complete_masks(out, ref):
    "Every NIfTI-looking file in `out` is a finished mask, equal to the uninterrupted run's"
    found = nifti_like(out)
    for f in found:
        assert not f.name.startswith('.'), f
        assert f.read_bytes() == (ref/f.name).read_bytes(), f
    return found

def test_predict_killed_while_writing_leaves_no_partial_nifti(work, model, volumes, pred_ref):
    out = work/'pred_killed'
    p = py(_KILL_PREDICT, model, volumes, out, env={'KILL_AT': '2'})
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert len(_only_complete_masks(out, pred_ref)) == 1          # the first mask; the second was being written
    assert [f for f in out.iterdir() if f.name.endswith('.part')]   # ... into a temporary file no reader takes for NIfTI

def test_predict_interrupted_leaves_no_partial_nifti(work, model, volumes, pred_ref):
    "Ctrl-C (SIGINT) while the second mask is being written: the first mask is complete, no partial file, not even a temporary one"
    out = work/'pred_sigint'
    p = py(_KILL_PREDICT, model, volumes, out, '--workers', '0', env={'KILL_AT': '2', 'KILL_SIG': 'SIGINT'})   # written in this thread
    assert p.returncode == 130 and p.stderr.strip().splitlines()[-1] == 'lits-predict: interrupted', p.stderr[-3000:]
    no_traceback(p.stderr)
    assert len(_only_complete_masks(out, pred_ref)) == 1
    assert not [f for f in out.iterdir() if f.name.endswith('.part')]

@pytest.fixture(scope='module')
def files(work, model):
    "Damaged model files, pickles that would run code, a file where a folder should be, an empty folder, a wrong file name"
    import pickle
    raw = model.read_bytes()
    (work/'cut.safetensors').write_bytes(raw[:len(raw)//2])
    (work/'junk.safetensors').write_bytes(b'hello')
    for name in ('evil.pkl', 'evil.pth', 'evil.safetensors'): (work/name).write_bytes(pickle.dumps(_Evil(work/'owned')))
    (work/'a_file').write_text('not a folder')
    (work/'empty folder').mkdir()
    return work

PREDICT_CALLS = {  # name: (model, input, output, file limit in bytes)
    'cut model': ('cut.safetensors', 'volume-0', 'out_cut', None), 'junk model': ('junk.safetensors', 'volume-0', 'out_junk', None),
    'unwritable': ('MODEL', 'volume-0', 'a_file/masks', None), 'full disk': ('MODEL', 'volume-0', 'out_full', 4096),
    'evil.pkl': ('evil.pkl', 'volume-0', 'out_pkl', None), 'evil.pth': ('evil.pth', 'volume-0', 'out_pth', None),
    'evil.safetensors': ('evil.safetensors', 'volume-0', 'out_evil', None), 'empty': ('MODEL', 'empty folder', 'out_empty', None),
    'scan.nrrd': ('MODEL', 'scan.nrrd', 'out_nrrd', None), 'fuzz': ('MODEL', 'fuzz_data', 'fuzz_masks', None),
    'bad': ('MODEL', 'données CT 2024', 'bad masks', None)}

@pytest.fixture(scope='module')
def predict_calls(work, model, volumes, files, fuzz_files, bad_data):
    "lits-predict on each case of `PREDICT_CALLS`, all in one process"
    def path(n): return model if n == 'MODEL' else volumes/f'{n}.nii' if n.startswith('volume') else work/n
    names = list(PREDICT_CALLS)
    res = calls('lits_fastai.cli:lits_predict', *[[path(m), path(i), work/o] for m, i, o, _ in PREDICT_CALLS.values()],
                fsize={k: v[3] for k, v in enumerate(PREDICT_CALLS.values()) if v[3]})
    return dict(zip(names, res))

@pytest.mark.parametrize('name,named,problem', [
    ('cut model', 'cut.safetensors', 'truncated or corrupt'), ('junk model', 'junk.safetensors', 'not a valid lits_fastai model file'),
    ('unwritable', 'a_file/masks', 'cannot write the output folder (Not a directory)'),
    ('full disk', 'out_full/segmentation-0.nii', 'cannot write (File too large)')])
def test_predict_damaged_model_unwritable_output_full_disk(work, predict_calls, name, named, problem):
    "One line naming the file and the problem, exit status 1, and no mask file left behind"
    r = predict_calls[name]
    no_traceback(r['err'], r['out'])
    lines = naming(r['err'], work/named)
    assert r['rc'] == 1 and len(lines) == 1 and problem in lines[0], r['err']
    o = work/PREDICT_CALLS[name][2]
    assert not o.is_dir() or not list(o.iterdir()), list(o.iterdir())

def test_prepare_and_evaluate_unwritable_output_and_full_disk(work, data, pred_ref):
    "lits-prepare and lits-evaluate: one line, exit status 1, and nothing left that looks finished; the rerun completes"
    (work/'b_file').write_text('not a folder')
    p = cli('lits-prepare', data, work/'b_file'/'cache')
    no_traceback(p.stderr); assert p.returncode == 1 and p.stderr.strip() == f"{work/'b_file'/'cache'}: cannot write the cache (Not a directory)"
    full = work/'cache_full'
    p = cli('lits-prepare', data, full, '--n-workers', 0, fsize=4096)           # a label stack is 8 KB
    no_traceback(p.stderr, p.stdout)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and 'cannot write the cache (File too large)' in p.stderr, p.stderr
    assert not list(full.rglob('*.part')) and not list(full.rglob('meta.json')) and not (full/'manifest.csv').exists()
    assert cli('lits-prepare', data, full).returncode == 0 and tree(full) == tree(work/'cache')
    p = cli('lits-evaluate', pred_ref, pred_ref, '--out', work/'b_file'/'metrics.csv')
    no_traceback(p.stderr); assert p.returncode == 1 and naming(p.stderr, work/'b_file'/'metrics.csv'), p.stderr
    p = cli('lits-evaluate', pred_ref, pred_ref, '--out', work/'full'/'metrics.csv', fsize=300)
    no_traceback(p.stderr); assert p.returncode == 1 and 'cannot write (File too large)' in naming(p.stderr, work/'full'/'metrics.csv')[0]
    assert not (work/'full').exists() or not list((work/'full').iterdir())


# ============================================================================================ 2. bad input
def _bad_data(root):
    "One folder (with spaces and non-ASCII characters in its path) holding good cases and one case of each kind of bad input"
    root.mkdir(parents=True)
    im, lb, spc = synth_case(3, shape=SHAPE)
    g = synth_geometry(SHAPE, spc, 'LPS')
    def vol(i, img=im, gv=g, ext='nii', dt=np.int16, sub=''): return save_nifti(img, root/sub/f'volume-{i}.{ext}', gv, dtype=dt)
    def seg(i, lbl=lb, gs=g, ext='nii', dt=np.uint8, sub=''): return save_nifti(lbl, root/sub/f'segmentation-{i}.{ext}', gs, dtype=dt)
    def raw(fn, a): nib.save(nib.Nifti1Image(a, np.diag([.8, .8, 2.5, 1])), str(fn)); return fn
    for i in (0, 1): vol(i); seg(i)
    vol(2, sub='série 2 (é)'); seg(2, sub='série 2 (é)')                            # a path with spaces and non-ASCII
    k = {}
    f = vol(10, ext='nii.gz'); seg(10); b = f.read_bytes(); f.write_bytes(b[:len(b)//2])
    k['truncated .nii.gz'] = (f, 'truncated or corrupt image data')
    f = vol(11); seg(11); f.write_text('this is not an image\n')
    k['not a NIfTI file'] = (f, 'not a readable NIfTI file')
    f = vol(12, ext='nii.gz'); seg(12); f = f.rename(root/'volume-12.nii')
    k['wrong extension'] = (f, 'gzip-compressed, so its name should end in .nii.gz')
    seg(13); k['2D image'] = (raw(root/'volume-13.nii', im[:, :, 0]), 'expected a 3D volume, got shape (32, 32)')
    seg(14); k['4D image'] = (raw(root/'volume-14.nii', np.stack([im, im], -1)), 'expected a 3D volume, got shape (32, 32, 8, 2)')
    vol(15); k['shape mismatch'] = (seg(15, lbl=lb[:, :, :-1], gs=synth_geometry(SHAPE[:2] + (SHAPE[2]-1,), spc, 'LPS')), "differs from the volume's")
    vol(16); k['affine mismatch'] = (seg(16, gs=synth_geometry(SHAPE, spc, 'LPS', origin=(0, 0, 2.5))), "affine differs from the volume's by up to 2.5 mm")
    vol(17); l = lb.copy(); l[3:5, 3:5, 4] = 7; k['labels outside {0,1,2}'] = (seg(17, lbl=l), 'labels outside {0, 1, 2}: found 7')
    vol(18); l = lb.astype(np.float32); l[10, 10, 6] = .5; k['float labels'] = (seg(18, lbl=l, dt=np.float32), 'labels are not integers: found 0.5')
    i = im.astype(np.float32); i[5, 5, 3] = np.inf; seg(19); k['NaN or inf intensities'] = (vol(19, img=i, dt=np.float32), 'NaN or infinite intensities')
    seg(20); k['constant volume'] = (vol(20, img=np.full(SHAPE, -1000, np.int16)), 'constant intensity -1000 in every voxel')
    vol(21); k['no liver'] = (seg(21, lbl=np.zeros(SHAPE, np.uint8)), 'no liver labelled')
    vol(22); seg(22); k['duplicate case id'] = (vol(22, ext='nii.gz', sub='zz'), "duplicate case id '22'")
    return k

GOOD = {'0', '1', '2'}
PRED_KINDS = {'truncated .nii.gz', 'not a NIfTI file', 'wrong extension', '2D image', '4D image', 'NaN or inf intensities',
              'constant volume', 'duplicate case id'}                                        # the kinds whose bad file is a volume
SEG_ONLY_CASES = {'15', '16', '17', '18', '21'}                                              # their volumes are fine to segment

def _bad_eval(root):
    "Ground truth and predictions of one good case and one of each kind of bad label map"
    gt, pr = root/'vérité terrain', root/'préd masks'
    _, lb, spc = synth_case(3, shape=SHAPE)
    g = synth_geometry(SHAPE, spc, 'LPS')
    for i in range(13): save_nifti(lb, gt/f'segmentation-{i}.nii', g)
    def p(i, lbl=lb, gs=g, ext='nii', dt=np.uint8): return save_nifti(lbl, pr/f'segmentation-{i}.{ext}', gs, dtype=dt)
    def raw(fn, a): nib.save(nib.Nifti1Image(a, np.eye(4)), str(fn)); return fn
    k = {}
    p(0); p(12, lbl=np.zeros(SHAPE, np.uint8))                 # a good case, and a prediction without liver: scored, not an error
    f = p(2, ext='nii.gz'); b = f.read_bytes(); f.write_bytes(b[:len(b)//2]); k['truncated .nii.gz'] = (f, 'truncated or corrupt image data')
    f = p(3); f.write_text('not an image'); k['not a NIfTI file'] = (f, 'not a readable NIfTI file')
    f = p(4, ext='nii.gz').rename(pr/'segmentation-4.nii'); k['wrong extension'] = (f, 'gzip-compressed, so its name should end in .nii.gz')
    k['2D image'] = (raw(pr/'segmentation-5.nii', lb[:, :, 0]), 'expected a 3D volume')
    k['4D image'] = (raw(pr/'segmentation-6.nii', np.stack([lb, lb], -1)), 'expected a 3D volume')
    k['shape mismatch'] = (p(7, lbl=lb[:, :, :-1], gs=synth_geometry(SHAPE[:2] + (SHAPE[2]-1,), spc, 'LPS')), 'shape/affine mismatch')
    k['affine mismatch'] = (p(8, gs=synth_geometry(SHAPE, spc, 'LPS', origin=(0, 0, 2.5))), 'voxel positions differ by up to 2.5 mm')
    l = lb.copy(); l[3:5, 3:5, 4] = 7; k['labels outside {0,1,2}'] = (p(9, lbl=l), 'found 7')
    l = lb.astype(np.float32); l[10, 10, 6] = .5; k['float labels'] = (p(10, lbl=l, dt=np.float32), 'found 0.5')
    l = lb.astype(np.float32); l[10, 10, 6] = np.nan; k['NaN or inf intensities'] = (p(11, lbl=l, dt=np.float32), 'found nan')
    p(1); p(1, ext='nii.gz'); k['duplicate case id'] = (pr/'segmentation-1.nii', 'case 1 has 2 files')
    return gt, pr, k

@pytest.fixture(scope='module')
def bad_data(work):
    "The bad-input folder (its name has spaces and non-ASCII characters) and the bad predictions with their ground truth"
    data = work/'données CT 2024'
    kinds = _bad_data(data)
    gt, pr, ekinds = _bad_eval(work)
    return dict(data=data, kinds=kinds, gt=gt, pred=pr, ekinds=ekinds)

def _done(e): return subprocess.CompletedProcess([], e['rc'], e['out'], e['err'])

@pytest.fixture(scope='module')
def bad(work, bad_data, files, predict_calls, train_calls):
    "Each command line run once over the bad-input folder (lits-evaluate over the bad predictions), and once over an empty folder"
    b = bad_data
    res = dict(prepare=cli('lits-prepare', b['data'], work/'bad cache'), evaluate=cli('lits-evaluate', b['pred'], b['gt'], '--out', work/'bad metrics.csv'),
               predict=_done(predict_calls['bad']), train=_done(train_calls['bad']))
    res['empty'] = dict(prepare=cli('lits-prepare', work/'empty folder', work/'c0'), evaluate=cli('lits-evaluate', work/'empty folder', b['gt'], '--out', work/'m0.csv'),
                        train=_done(train_calls['empty']), predict=_done(predict_calls['empty']))
    return dict(res=res, work=work, **b)

KIND_NAMES = ['truncated .nii.gz', 'not a NIfTI file', 'wrong extension', '2D image', '4D image', 'shape mismatch', 'affine mismatch',
              'labels outside {0,1,2}', 'float labels', 'NaN or inf intensities', 'constant volume', 'no liver', 'duplicate case id']

@pytest.mark.parametrize('cmd', ['prepare', 'train', 'predict', 'evaluate'])
@pytest.mark.parametrize('kind', KIND_NAMES)
def test_bad_input_named_in_one_line(bad, cmd, kind):
    "Exactly one line naming the file and its problem, and no traceback, for each kind the command line reads"
    p = bad['res'][cmd]
    no_traceback(p.stdout, p.stderr)
    table = bad['ekinds'] if cmd == 'evaluate' else bad['kinds']
    if kind not in table: assert cmd == 'evaluate' and kind in ('constant volume', 'no liver'); return   # see test_evaluate_scores_...
    fn, problem = table[kind]
    lines = naming(p.stderr, fn)
    if cmd == 'predict' and kind not in PRED_KINDS: assert not lines, lines; return                    # label maps are not read
    assert len(lines) == 1 and problem in lines[0], (kind, lines, p.stderr[-3000:])

def test_bad_input_leaves_the_good_cases_processed(bad):
    r, w = bad['res'], bad['work']
    for k in ('prepare', 'predict', 'evaluate'): assert r[k].returncode == 1, r[k].stderr   # bad files make the exit status 1 ...
    man = pd.read_csv(w/'bad cache'/'manifest.csv', dtype={'case': str})
    assert set(man['case']) == GOOD                                                           # ... after the good cases were done
    assert r['train'].returncode == 0, r['train'].stderr[-3000:]                              # training skips bad cases and trains
    from safetensors import safe_open
    with safe_open(str(w/'bad run'/'model.safetensors'), 'pt') as f: c = json.loads(f.metadata()['lits_fastai'])
    assert set(c['train_cases']) | set(c['valid_cases']) == GOOD
    masks = {p.name for p in (w/'bad masks').iterdir() if p.name != 'summary.csv'}   # and the summary of the masks
    assert masks == {f'segmentation-{c}.nii' for c in GOOD | SEG_ONLY_CASES}
    per_case = pd.read_csv(w/'bad metrics.csv', dtype={'case': str})
    assert set(per_case['case']) == {'0', '12'}

def test_evaluate_scores_a_prediction_without_liver(bad):
    "A predicted mask without liver is a result (Dice 0), not bad input: scored and counted as empty"
    per_case = pd.read_csv(bad['work']/'bad metrics.csv', dtype={'case': str})
    row = per_case[(per_case['case'] == '12') & (per_case['cls'] == 'liver')].iloc[0]
    assert row['dice'] == 0 and row['empty'] == 'pred'

@pytest.mark.parametrize('cmd', ['prepare', 'train', 'predict', 'evaluate'])
def test_empty_folder_is_one_line(bad, cmd):
    p = bad['res']['empty'][cmd]
    no_traceback(p.stdout, p.stderr)
    lines = naming(p.stderr, bad['work']/'empty folder')
    assert p.returncode == 1 and len(lines) == 1 and ('no NIfTI volumes' in lines[0] or 'no NIfTI label maps' in lines[0]), p.stderr

def test_wrong_extension_of_a_single_file(work, predict_calls, pred_ref):
    "A single input file that is not named .nii/.nii.gz: one line"
    r = predict_calls['scan.nrrd']
    e = cli('lits-evaluate', work/'scan.nrrd', pred_ref/'segmentation-0.nii', '--out', work/'m_nrrd.csv')
    for rc, err in ((r['rc'], r['err']), (e.returncode, e.stderr)):
        no_traceback(err)
        assert rc == 1 and len(naming(err, work/'scan.nrrd')) == 1 and 'not a NIfTI file' in err, err


def _fuzz(src:Path, n:int, seed:int) -> list:
    "`n` damaged copies of the NIfTI files `src`: truncated at random, or with random bytes changed (mostly in the header)"
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        f = src[i % len(src)]
        b = bytearray(f.read_bytes())
        if i % 3 == 0: b = b[:int(rng.integers(1, len(b)))]
        else:
            hi = 352 if (i % 3 == 1 and not f.name.endswith('.gz')) else len(b)
            for pos in rng.integers(0, hi, int(rng.integers(1, 9))): b[pos] = int(rng.integers(0, 256))
        out.append((f, bytes(b)))
    return out

@pytest.fixture(scope='module')
def fuzz_files(work):
    "30 damaged volumes (seed 0) beside good label maps, 30 damaged label maps (seed 1) beside good ground truth"
    (work/'scan.nrrd').write_bytes(b'')                       # (a wrong file name, for test_wrong_extension_of_a_single_file)
    im, lb, spc = synth_case(5, shape=SHAPE)
    g = synth_geometry(SHAPE, spc, 'RAS')
    src = work/'fuzz_src'
    srcs = [save_nifti(im, src/'v.nii', g, dtype=np.int16), save_nifti(im, src/'v.nii.gz', g, dtype=np.int16),
            save_nifti(lb, src/'s.nii', g), save_nifti(lb, src/'s.nii.gz', g)]
    vols, segs = _fuzz(srcs[:2], 30, 0), _fuzz(srcs[2:], 30, 1)
    fd = work/'fuzz_data'; pd_ = work/'fuzz_pred'; gt = work/'fuzz_gt'
    for i, ((f, b), (fs, bs)) in enumerate(zip(vols, segs)):
        ext = '.nii.gz' if f.name.endswith('.gz') else '.nii'
        fd.mkdir(exist_ok=True); pd_.mkdir(exist_ok=True); gt.mkdir(exist_ok=True)
        (fd/f'volume-{i}{ext}').write_bytes(b); shutil.copy(srcs[2], fd/f'segmentation-{i}.nii')
        (pd_/f'segmentation-{i}{".nii.gz" if fs.name.endswith(".gz") else ".nii"}').write_bytes(bs); shutil.copy(srcs[2], gt/f'segmentation-{i}.nii')
    return dict(data=fd, pred=pd_, gt=gt)

@pytest.fixture(scope='module')
def fuzzed(work, fuzz_files, predict_calls):
    "The fuzzed files through the reading path of lits-prepare, lits-predict and lits-evaluate (each run has a time limit)"
    return dict(prepare=cli('lits-prepare', fuzz_files['data'], work/'fuzz_cache', timeout=180), predict=_done(predict_calls['fuzz']),
                evaluate=cli('lits-evaluate', fuzz_files['pred'], fuzz_files['gt'], '--out', work/'fuzz.csv', timeout=180), work=work, **fuzz_files)

@pytest.mark.parametrize('cmd', ['prepare', 'predict', 'evaluate'])
def test_fuzzed_files_never_crash_or_hang(fuzzed, cmd):
    "No traceback, no hang (the runs have a time limit), and each damaged file is either processed or named in one line"
    p = fuzzed[cmd]
    no_traceback(p.stdout, p.stderr)
    assert p.returncode in (0, 1), p.stderr[-3000:]
    w = fuzzed['work']
    if cmd == 'evaluate':
        done = set(pd.read_csv(w/'fuzz.csv', dtype={'case': str})['case']) if (w/'fuzz.csv').stat().st_size > 1 else set()
        files = {f: f.name.split('.')[0].split('-')[1] for f in fuzzed['pred'].iterdir()}
    else:
        files = {f: f.name.split('.')[0].split('-')[1] for f in fuzzed['data'].glob('volume-*')}
        done = set(pd.read_csv(w/'fuzz_cache'/'manifest.csv', dtype={'case': str})['case']) if cmd == 'prepare' else \
               {f.name.split('.')[0].split('-')[1] for f in (w/'fuzz_masks').glob('segmentation-*')}
    for f, case in files.items():
        n = len([l for l in naming(p.stderr, f) if ': warning: ' not in l])      # errors; a repaired header is a warning
        assert (case in done) != (n == 1) and n <= 1, (cmd, f.name, case in done, naming(p.stderr, f))


# ============================================================================================ 3. reproducibility
def test_same_data_same_cache_bytes(work, data, cache):
    "Two lits-prepare runs (serial and parallel, other hash seeds) write byte-identical caches"
    for h, n in (('3', 0), ('4', 2)):
        c = work/f'cache_h{h}'
        assert cli('lits-prepare', data, c, '--n-workers', n, env={'PYTHONHASHSEED': h}).returncode == 0
        assert tree(c) == tree(cache)

def test_same_seed_same_training_and_metrics(work, run_a, model, pred_ref, train_calls):
    """A second run with the same seed: the same split, weights and logged metrics to 1e-6; LiTS metrics of the same masks are identical
    (predicting the same volumes twice gives the same bytes: see the kill tests, which compare with `pred_ref`)"""
    out, r = work/'run_b', train_calls['run_b']
    assert r['rc'] == 0, r['err'][-3000:]
    assert_same_weights(out/'model.safetensors', model)
    np.testing.assert_allclose(history(out).to_numpy(float), history(run_a).to_numpy(float), atol=1e-6, rtol=0)
    from safetensors import safe_open
    def contract(f):
        with safe_open(str(f), 'pt') as s: return json.loads(s.metadata()['lits_fastai'])
    assert contract(out/'model.safetensors') == contract(model)          # the same split, drawn in processes with other hash seeds
    from lits_fastai.data import patient_split
    ids = [str(i) for i in range(23)] + ['a', 'b']
    assert patient_split(ids, valid_pct=.3, seed=1) == patient_split(list(reversed(ids)), valid_pct=.3, seed=1) != patient_split(ids, valid_pct=.3, seed=2)
    gt = work/'repro_gt'
    for i in range(8):                                  # ground truth: the reference masks with a shifted liver
        m = nib.load(str(pred_ref/f'segmentation-{i}.nii'))
        a = np.asarray(m.dataobj); a = np.roll(a, 2, axis=0); a[8:20, 8:20, 4:12] = 1 + (i % 2)
        save_nifti(a, gt/f'segmentation-{i}.nii', affine=m.affine)
    e1 = cli('lits-evaluate', pred_ref, gt, '--out', work/'repro1.csv')
    e2 = cli('lits-evaluate', pred_ref, gt, '--out', work/'repro2.csv')
    assert e1.returncode == e2.returncode == 0, e1.stderr
    assert (work/'repro1.csv').read_bytes() == (work/'repro2.csv').read_bytes()
    assert (work/'repro1_summary.csv').read_bytes() == (work/'repro2_summary.csv').read_bytes()


@pytest.mark.parametrize('workers', [0, 2])
def test_same_seed_same_augmented_batches(cache, workers):
    "2.5D slices with oversampling and nnU-Net's augmentation: the same seed draws the same training batches, with loader workers too"
    import itertools, torch
    from fastai.torch_core import set_seed
    from lits_fastai.data import slice_dls
    def batches(seed):
        set_seed(seed)
        dls = slice_dls(cache, size=32, bs=4, context=3, select='oversample', aug='auto', valid_pct=0.34, seed=seed, num_workers=workers)
        return [torch.cat([torch.as_tensor(x).as_subclass(torch.Tensor).flatten(), torch.as_tensor(y).as_subclass(torch.Tensor).flatten().float()])
                for x, y in itertools.islice(dls.train, 3)]
    a, b, c = batches(3), batches(3), batches(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == 3
    assert not all(torch.equal(x, y) for x, y in zip(a, c))

# ============================================================================================ 4. leakage
def _id_case(i, shape=SHAPE):
    "A case whose every voxel tells its id: HU 100*i + 20 outside the liver, 100*i + 60 inside"
    X, Y, Z = shape
    img = np.full(shape, 100*i + 20, np.int16); lbl = np.zeros(shape, np.uint8)
    xx, yy, zz = np.mgrid[:X, :Y, :Z]
    liver = ((xx - X/2)/(X/3))**2 + ((yy - Y/2)/(Y/3))**2 + ((zz - Z/2)/(Z/2))**2 < 1
    img[liver] += 40; lbl[liver] = 1; lbl[liver & (xx < X/2 - 2) & (yy < Y/2 - 2)] = 2*(i % 2)
    lbl[liver & (lbl == 0)] = 1
    return img, lbl

@pytest.fixture(scope='module')
def id_cache(work):
    "A cache of 8 cases whose voxels tell their case id"
    from lits_fastai.cache import prepare_cache
    d = work/'id_data'
    for i in range(8):
        img, lbl = _id_case(i)
        g = synth_geometry(SHAPE, (1., 1., 2.), 'RAS')
        save_nifti(img, d/f'volume-{i}.nii', g, dtype=np.int16); save_nifti(lbl, d/f'segmentation-{i}.nii', g)
    prepare_cache(d, work/'id_cache', n_workers=0, progress=False)
    return work/'id_cache'

IDENTITY = {'kind': 'clip', 'lo': -1024, 'hi': 3071}       # HU -> [0, 1], linear: the case id survives

def _batches_cases(dl, lo=-1024, hi=3071):
    "Case ids read back from the voxels of every batch of `dl`"
    seen = set()
    for xb, _ in dl:
        for x in xb: seen |= case_of(x.detach().cpu().numpy()*(hi - lo) + lo)
    return {str(c) for c in seen}

def _check_dls(dls, test_cases=()):
    "Items and voxels of the training and validation loaders come from disjoint case sets, the ones the split names, and no test case"
    tr, va = set(map(str, dls.train_cases)), set(map(str, dls.valid_cases))
    assert tr and va and not tr & va
    assert set(dls.test_cases) == set(test_cases) and not set(test_cases) & (tr | va)
    ti, vi = {o.case for o in dls.train.items}, {o.case for o in dls.valid.items}
    assert ti <= tr and vi == va and not ti & vi
    assert _batches_cases(dls.train) <= tr and _batches_cases(dls.valid) == va

SPLITS = [dict(valid_pct=0.25, seed=0), dict(valid_cases=['2', '5']), dict(fold=1, n_folds=4, seed=2), dict(fold=2, n_folds=3, seed=5, max_cases=6),
          dict(valid_cases=['2', '5'], test_cases=['0', '7']), dict(valid_pct=0.34, seed=1, test_cases=['3'], max_cases=6)]

@pytest.mark.parametrize('split', SPLITS, ids=lambda s: ','.join(f'{k}={v}' for k, v in s.items()))
def test_slice_dls_never_leak(id_cache, split):
    from lits_fastai.data import slice_dls
    _check_dls(slice_dls(id_cache, size=32, bs=8, intensity=IDENTITY, aug=None, **split), split.get('test_cases', ()))

@pytest.mark.parametrize('mode,split', [('resize', SPLITS[0]), ('patch', SPLITS[2]), ('patch', SPLITS[3]), ('resize', SPLITS[5])],
                         ids=lambda o: o if isinstance(o, str) else ','.join(f'{k}={v}' for k, v in o.items()))
def test_volume_dls_and_patch_sampler_never_leak(id_cache, mode, split):
    from lits_fastai.data3d import volume_dls
    dls = volume_dls(id_cache, size=(8, 16, 16) if mode == 'patch' else (8, 32, 32), mode=mode, bs=2, intensity=IDENTITY, aug=False,
                     samples_per_case=3, progress=False, **split)
    _check_dls(dls, split.get('test_cases', ()))

@pytest.mark.parametrize('factory', ['slice_dls', 'volume_dls'])
def test_test_cases_never_reach_intensity_fitting(id_cache, factory, monkeypatch):
    "Histogram bins (LT-Net's fitted intensity statistics) are fitted on the training cases alone, never on validation or test cases"
    import lits_fastai.data as D, lits_fastai.data3d as D3
    seen, fit = [], D.fit_hist_bins
    def fit_hist_bins(cache, cases, **kw):
        seen.append(sorted(map(str, cases))); return fit(cache, cases, **kw)
    monkeypatch.setattr(D, 'fit_hist_bins', fit_hist_bins)
    hist = {'kind': 'window_hist', 'windows': [[400, 50]], 'bins': None}
    if factory == 'slice_dls': dls = D.slice_dls(id_cache, size=32, bs=8, intensity=hist, aug=None, valid_cases=['2'], test_cases=['0', '7'])
    else: dls = D3.volume_dls(id_cache, size=(8, 16, 16), intensity=hist, aug=False, valid_cases=['2'], test_cases=['0', '7'], progress=False)
    assert seen == [sorted(dls.train_cases)] and not {'0', '2', '7'} & set(seen[0])

def test_png_dls_never_leak(work):
    import cv2
    from lits_fastai.png import png_dls
    root = work/'png'
    for sub in ('images', 'liver', 'tumor'): (root/sub).mkdir(parents=True)
    for c in range(6):
        for z in range(4):
            cv2.imwrite(str(root/'images'/f'{c}_{z}.png'), np.full((16, 16), 30*c + 10, np.uint8))
            m = np.zeros((16, 16), np.uint8); m[4:12, 4:12] = 255
            cv2.imwrite(str(root/'liver'/f'{c}_{z}.png'), m); cv2.imwrite(str(root/'tumor'/f'{c}_{z}.png'), m*(c % 2))
    for split in (dict(valid_pct=0.34, seed=1), dict(fold=0, n_folds=3), dict(valid_cases=['4'])):
        dls = png_dls(root, size=16, bs=4, aug=None, **split)
        tr, va = set(dls.train_cases), set(dls.valid_cases)
        assert tr and va and not tr & va and tr | va == {str(c) for c in range(6)}
        for dl, cases in ((dls.train, tr), (dls.valid, va)):
            seen = {str(int(round((v*255 - 10)/30))) for xb, _ in dl for v in np.unique(xb.cpu().numpy())}
            assert seen <= cases and (dl is dls.train or seen == cases)

def test_patient_split_folds_and_fractions_never_leak():
    "Every fold of k-fold is disjoint from its training cases and the folds' validation sets cover every case exactly once"
    from lits_fastai.data import patient_split
    ids = [str(i) for i in range(17)]
    tbl = pd.DataFrame(dict(case=ids, liver_vox=1000, tumor_vox=[37*i % 11 for i in range(17)]))
    for stratify in (True, False):
        for k in (2, 3, 5, 17):
            for seed in (0, 1):
                valids = []
                for f in range(k):
                    tr, va = patient_split(tbl, fold=f, n_folds=k, seed=seed, stratify=stratify)
                    assert not set(tr) & set(va) and set(tr) | set(va) == set(ids)
                    valids += va
                assert sorted(valids) == sorted(ids)                          # each case validated exactly once
        for pct in (0.1, 0.2, 0.5, 0.9):
            tr, va = patient_split(tbl, valid_pct=pct, seed=4, stratify=stratify)
            assert not set(tr) & set(va) and set(tr) | set(va) == set(ids) and len(va) == max(1, round(17*pct))
    tr, va = patient_split(tbl, valid_cases=['3', '9'])
    assert va == ['3', '9'] and not set(tr) & set(va)
    from lits_fastai.data import LeakageError, check_split
    with pytest.raises(LeakageError): check_split(['1', '2'], ['2', '3'])

def test_compare_folds_never_leak(id_cache):
    "lits-compare's folds: three disjoint groups within the (limited) cases, and cross-validation tests every case once"
    from lits_fastai.compare import compare_folds
    ids = {str(i) for i in range(8)}
    for kw in (dict(), dict(test_pct=0.5, seed=3), dict(test_cases=['1', '6']), dict(test_cases=['1'], valid_cases=['4', '6']),
               dict(valid_pct=0.5, max_cases=5), dict(n_folds=4, seed=1), dict(n_folds=3, max_cases=6), dict(n_folds=8)):
        folds = compare_folds(id_cache, **kw)
        for f in folds:
            tr, va, te = set(f['train']), set(f['valid']), set(f['test'])
            assert tr and va and te and not tr & va and not tr & te and not va & te and tr | va | te <= ids
        if kw.get('n_folds'):
            tested = [c for f in folds for c in f['test']]
            assert len(tested) == len(set(tested)) == len(set(folds[0]['train'] + folds[0]['valid'] + folds[0]['test']))

def test_lits_compare_trains_and_scores_on_one_leak_free_split(work, cache, train_calls):
    "A tiny lits-compare: trained on the training cases, checkpoint and post-processing chosen on the validation cases, scored on the test cases"
    r = train_calls['compare']
    no_traceback(r['err'])
    assert r['rc'] == 0, r['err'][-3000:]
    (f,) = json.loads((work/'compare'/'split.json').read_text())['folds']
    tr, va, te = set(f['train']), set(f['valid']), set(f['test'])
    assert tr and va and te and not tr & va and not tr & te and not va & te and tr | va | te == {str(i) for i in range(6)}
    assert {f.name.split('.')[0].split('-')[1] for f in (work/'compare'/'cases'/'volumes').iterdir()} == va | te
    from safetensors import safe_open
    (mf,) = (work/'compare'/'systems').glob('*/fold_0/run/model.safetensors')
    with safe_open(str(mf), 'pt') as fh: c = json.loads(fh.metadata()['lits_fastai'])
    assert set(c['train_cases']) == tr and set(c['valid_cases']) == va and set(c['test_cases']) == te
    fd = mf.parent.parent
    assert set(json.loads((fd/'postprocess.json').read_text())['cases']) == va
    assert set(pd.read_csv(fd/'metrics.csv', dtype={'case': str})['case']) == te
    assert set(pd.read_csv(fd.parent/'oof_metrics.csv', dtype={'case': str})['case']) == te

CV_ARGS = ['--archs', 'smp:Linknet:mobilenet_v2', '--folds', 3, '--epochs', 2, '--size', 32, '--bs', 4, '--pretrained', 'no', '--n-boot', 10]

def test_cross_validation_killed_resumes_without_retraining_finished_folds(work, cache):
    "lits-compare --folds 3 SIGKILLed in epoch 2 of fold 1, rerun with --resume: fold 0 untouched, fold 1 goes on at epoch 2, every case scored once"
    out = work/'cv_killed'
    p = py(_KILL, 'fold_1', 'lits_fastai.cli:lits_compare', cache, *CV_ARGS, '--out', out)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    s = out/'systems'/'smp_Linknet_mobilenet_v2'
    assert (s/'fold_0'/'result.json').exists() and not (s/'fold_1'/'result.json').exists() and not (s/'fold_2').exists()
    assert len(pd.read_csv(s/'fold_1'/'run'/'history.csv')) == 1                  # killed inside epoch 2 of fold 1
    stamp = lambda: {f: (s/'fold_0'/f).stat().st_mtime_ns for f in ('run/model.safetensors', 'train.json', 'result.json', 'metrics.csv')}
    before = stamp()
    r = cli('lits-compare', cache, *CV_ARGS, '--out', out, '--resume')
    assert r.returncode == 0, r.stderr[-3000:]
    no_traceback(r.stderr)
    assert stamp() == before and 'fold 0: skipped, finished already' in r.stdout     # the finished fold is not retrained
    assert json.loads((s/'fold_1'/'train.json').read_text())['resumed'] and len(pd.read_csv(s/'fold_1'/'run'/'history.csv')) == 2
    assert not json.loads((s/'fold_2'/'train.json').read_text())['resumed']
    oof = pd.read_csv(s/'oof_metrics.csv', dtype={'case': str})
    assert sorted(oof['case'].unique(), key=int) == [str(i) for i in range(6)] and oof.groupby(['case', 'cls']).size().max() == 1
    ens = json.loads((s/'ensemble'/'ensemble.json').read_text())
    assert len(ens['members']) == 3 and (out/'compare.md').exists()
    q = cli('lits-predict', s/'ensemble', out/'cases'/'volumes', work/'cv_pred')
    assert q.returncode == 0 and len(list((work/'cv_pred').glob('*.nii*'))) == 6, q.stderr[-3000:]


# ============================================================================================ 5. security
class _Evil:
    "A pickle that runs code when loaded: it creates the file `path`"
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (exec, (f"open({self.path!r}, 'w').write('code from a model file ran')",))

@pytest.fixture(scope='module')
def train_calls(work, cache, files, bad_data, killed_run):
    """In one process, under another hash seed than run_a's: the killed run resumed, a second run like run_a, training on the
    bad-input folder, on an empty folder, resuming from a planted checkpoint that would run code, and a tiny lits-compare"""
    import torch
    run = work/'run_planted'
    (run/'checkpoints').mkdir(parents=True)
    torch.save({'epoch': 0, 'model': _Evil(work/'owned')}, run/'checkpoints'/'last.pth')
    todo = {'resume': [cache, *RUN_ARGS, '--out', killed_run, '--resume'], 'run_b': [cache, *RUN_ARGS, '--out', work/'run_b'],
            'bad': [bad_data['data'], '--cache', work/'bad train cache', *TRAIN, '--epochs', 1, '--valid-cases', '2', '--out', work/'bad run'],
            'empty': [work/'empty folder', '--cache', work/'c_empty', '--out', work/'r_empty'], 'planted': [cache, *RUN_ARGS, '--out', run, '--resume'],
            'compare': [cache, '--archs', 'smp:Linknet:mobilenet_v2', '--epochs', 1, '--size', 32, '--bs', 4, '--valid-pct', 0.34,
                        '--pretrained', 'no', '--n-boot', 10, '--out', work/'compare']}
    return dict(zip(todo, calls('lits_fastai.cli:lits_train', *todo.values(), env={'PYTHONHASHSEED': '5'},
                                entries={list(todo).index('compare'): 'lits_fastai.cli:lits_compare'})))

def test_model_files_and_checkpoints_never_run_code(work, volumes, predict_calls, train_calls):
    "A pickled model (as .pkl, .pth, or disguised as .safetensors) and a planted resume checkpoint are refused: no code runs"
    marker = work/'owned'
    for n in ('evil.pkl', 'evil.pth', 'evil.safetensors'):
        r = predict_calls[n]
        no_traceback(r['err'])
        assert r['rc'] == 1 and len(naming(r['err'], work/n)) == 1, r['err']
        assert ('refused' if n != 'evil.safetensors' else 'not a valid lits_fastai model file') in r['err']
    run, r = work/'run_planted', train_calls['planted']
    no_traceback(r['err'])
    assert r['rc'] == 1 and 'unreadable or unsafe training checkpoint' in naming(r['err'], run/'checkpoints'/'last.pth')[0], r['err']
    assert not marker.exists()
    r = calls('lits_fastai.cli:lits_predict', [work/'evil.pkl', volumes/'volume-0.nii', work/'out_trusted', '--allow-pickle'])[0]
    assert marker.exists()                              # the explicit flag, and only it, unpickles the file: its code runs
    no_traceback(r['err'])
    assert r['rc'] == 1 and 'not a loadable fastai Learner' in naming(r['err'], work/'evil.pkl')[0], r['err']   # and it is no Learner


# ------------------------------------------------ 5b. a model file is untrusted input: crafted contracts and ONNX files
def _crafted(work, model) -> dict:
    "{name: (file, file the message must name, problem)}: model files with crafted contracts, ONNX files, an ensemble with a bad member"
    import torch
    from safetensors.torch import load_file, save_file, save_model
    from lits_fastai.learner import read_contract
    from lits_fastai.models import build_model
    d = work/'crafted'; d.mkdir(exist_ok=True)
    c, w = read_contract(model), load_file(str(model))
    def put(name, contract, tensors=w):
        save_file(tensors, str(d/name), metadata={'lits_fastai': json.dumps(contract)}); return d/name
    k = {'no arch': (put('noarch.safetensors', {o: v for o, v in c.items() if o != 'arch'}), "'arch' missing"),
         'unknown encoder': (put('encoder.safetensors', {**c, 'arch': 'smp:Linknet:no_such_net'}), "unknown arch 'smp:Linknet:no_such_net'"),
         'kwargs misfit': (put('misfit.safetensors', {**c, 'model_kwargs': {**c['model_kwargs'], 'n_in': 3}}), 'weights do not fit'),
         'no contract': (put('nocontract.safetensors', {**c, 'format': 'other/1'}), 'unsupported model file format')}
    u = build_model('unet3d', base=4, n_in=1, n_out=1)
    c3 = {**c, 'arch': 'unet3d', 'dims': 3, 'mode': None, 'size': [16, 16, 16], 'classes': ['background', 'liver'],
          'model_kwargs': {'base': 4, 'n_in': 1, 'n_out': 1}}
    save_model(u, str(d/'u3d.safetensors'), metadata={'lits_fastai': json.dumps(c3)})
    w3 = load_file(str(d/'u3d.safetensors'))
    for b in (3000, 10**6, 10**7):
        k[f'unet3d base {b}'] = (put(f'base{b}.safetensors', {**c3, 'model_kwargs': {**c3['model_kwargs'], 'base': b}}, w3),
                                 'weights do not fit' if b < 2**20 else "model argument 'base'")
    (d/'junk.onnx').write_bytes(b'not an onnx graph')
    k['junk onnx'] = (d/'junk.onnx', 'not a valid ONNX model file')
    ens = d/'ensemble'; ens.mkdir(exist_ok=True)
    shutil.copy(model, ens/'a.safetensors'); shutil.copy(d/'noarch.safetensors', ens/'b.safetensors')
    k['ensemble bad member'] = (ens, "'arch' missing", ens/'b.safetensors')
    return {n: (v[0], v[2] if len(v) > 2 else v[0], v[1]) for n, v in k.items()}

def test_crafted_model_files_one_line(work, model, volumes):
    "lits-predict with a crafted model file: one line naming the file (an ensemble: its bad member), exit status 1, no traceback, no mask"
    k = _crafted(work, model)
    res = calls('lits_fastai.cli:lits_predict', *[[f, volumes/'volume-0.nii', work/'crafted'/f'out_{i}'] for i, (f, _, _) in enumerate(k.values())])
    for (name, (f, named, problem)), r in zip(k.items(), res):
        no_traceback(r['err'], r['out'])
        lines = naming(r['err'], named)
        assert r['rc'] == 1 and len(lines) == 1 and problem in lines[0], (name, r['err'])
    assert not list((work/'crafted').glob('out_*/*'))

def test_crafted_model_memory(work, model):
    "A contract asking for a 3D U-Net with base 3000 (tens of GB) or 10^6, 10^7 (petabytes) is refused within the memory of reading the header"
    k = _crafted(work, model)
    code = r'''
import sys, resource
from lits_fastai.learner import load_model_file
from lits_fastai.core import BadInputError
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for f in sys.argv[1:]:
    try: load_model_file(f); print('loaded', f)
    except BadInputError as e: pass
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0)/1024)
'''
    p = py(code, *[k[f'unet3d base {b}'][0] for b in (3000, 10**6, 10**7)], timeout=120)
    assert p.returncode == 0 and 'loaded' not in p.stdout, p.stderr[-2000:]
    grow = float(p.stdout.split()[-1])
    assert grow < 200, f"peak RSS grew by {grow:.0f} MB"
