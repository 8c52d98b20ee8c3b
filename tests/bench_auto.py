"""What `auto` is worth: held-out Dice of the self-configured recipe against the papers' recipes and a bare PyTorch loop,
each given the same wall-clock training budget, and an ablation of auto's ingredients.

Data: `make_synth(n_cases=--cases, realistic=True, shape=--shape, seed=0)` (cases that vary as LiTS scans do: field of
view, slice spacing, HU offsets and calibration, noise, many small lesions) prepared with `cache.prepare_cache`. The
split is by patient and fixed: `--test` cases (two or more with tumours and one without where there are enough) are never
trained on, validated on or used to fit an intensity normalisation; `--valid` cases (one with tumours) are every
system's validation set (checkpoint choice, auto's post-processing choice); the rest are trained on.

Systems, each trained for about `--budget` seconds (`train(..., budget=...)`: the number of epochs that fits, at least
one; where `train` has no `budget` yet, one epoch is timed first and the run repeated with the epochs that fit):

- `auto`: `train(cache, arch='auto', ...)`, the package's plan from the data's fingerprint;
- the papers' recipes (`ltnet`, `hybrid`, `cafct`, `dyntransnet2d` and the 3D `unet3d`), scaled to `--size` pixels
  (3D: `--size3d`) and, for LT-Net, a `--ltnet-encoder` lighter than its ResNet50; binary recipes are scored on their
  own class only (CAFCT-Net: tumour; DynTransNet, 3D U-Net: liver). The 3D `dyntransnet` does not fit a CPU budget
  (one epoch of 64^3 patches of 3 volumes took 4 minutes on a shared 2-core machine, plus its budget's timed steps):
  name it (`--only auto,dyntransnet,...` or `--only 3d`) to run it; every system trains at least one epoch;
- `bare`: plain PyTorch, no fastai: the same smp architecture and encoder as auto's model, from scratch, 1 input channel,
  Adam 1e-3, cross-entropy, whole cached slices resized to auto's input size, the liver window W150/L30 scaled to
  [0, 1], no augmentation, batches until the budget is spent; the test volumes predicted slice by slice, the logits
  resized back, argmax;
- the ablation: auto trained again without one ingredient at a time (`recipe` as a dict of fields): normalisation -> the plain liver
  window, 2.5D -> context 1, oversampling -> select 'all', augmentation -> none, CE+Dice -> CE; and the full auto model
  predicted without post-processing (`post=False`). Each variant trains for as many epochs as auto's own run did, so
  that only the ingredient changes (an epoch count fitted to a budget from a few timed steps swings with the load of
  a shared machine); `--ablation-budget` gives each the budget instead.

Scores: Dice of liver (labels 1+2) and tumour (label 2) on the test volumes in their stored geometry
(`inference.predict_volume` with its default post-processing, except where the ablation turns it off): the per-volume
mean (a volume where both masks are empty scores 1) and the global Dice (overlaps and sizes summed over the volumes).
The ablation's share of the gain: with score = mean of the liver and tumour per-volume Dice, each ingredient's drop
(auto - auto without it) divided by auto's gain over the bare loop.

    .venv/bin/python tests/bench_auto.py                 # 10 cases of 128x128x32, 3 test, budget 60 s: ~25 min on 2 cores
    .venv/bin/python tests/bench_auto.py --quick         # smoke run: 6 cases of 64x64x16, budget 8 s, 2D only: ~3 min
    .venv/bin/python tests/bench_auto.py --only auto,bare --budget 120
    .venv/bin/python tests/bench_auto.py --only 3d --size3d 48                   # the 3D recipes, DynTransNet included

Prints the command line first and markdown tables last. Not collected by pytest (the file name does not start with test_).
"""
import argparse, inspect, math, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import torch

PAPERS_2D = ['ltnet', 'hybrid', 'cafct', 'dyntransnet2d']
PAPERS_3D = ['unet3d', 'dyntransnet']
DEFAULT_3D = ['unet3d']   # DynTransNet's 64^3 patches take minutes an epoch on 2 CPU cores: run it by name (--only)
LIVER_WINDOW = {'kind': 'window', 'windows': [[150, 30]]}
ABLATIONS = [('normalisation', 'plain liver window', dict(recipe={'intensity': LIVER_WINDOW})),
             ('2.5D context', 'context 1', dict(recipe={'context': 1})),
             ('oversampling', "select 'all'", dict(recipe={'select': 'all'})),
             ('augmentation', 'aug None', dict(recipe={'aug': None})),
             ('CE+Dice loss', "loss 'ce'", dict(recipe={'loss': 'ce'})),
             ('post-processing', 'post=False', dict(post=False))]

# ---------------------------------------------------------------- data and split
def build(tmp:Path, n_cases:int, shape:tuple) -> tuple:
    "Realistic synthetic cases in the Kaggle layout and their slice cache"
    from lits_fastai.synth import make_synth
    from lits_fastai.cache import prepare_cache
    data = make_synth(tmp/'data', n_cases=n_cases, seed=0, shape=shape, realistic=True)
    res = prepare_cache(data, tmp/'cache', progress=False, n_workers=0)
    if res.failed: raise SystemExit(f"cache failed: {res.failed}")
    return data, tmp/'cache'

def split(n_cases:int, n_test:int, n_valid:int) -> tuple:
    "Fixed patient-level (train, valid, test) case ids: test and valid hold tumour-bearing cases, test one without where possible"
    from lits_fastai.synth import synth_plan
    plan = synth_plan(n_cases, 0, realistic=True)
    ids = [str(i) for i in range(n_cases)]
    tum = [i for i,c in zip(ids, plan) if c['n_tumors']]
    free = [i for i in ids if i not in tum]
    test = (tum[-(n_test-1):] + free[-1:]) if n_test>=2 and free else tum[-n_test:]
    rest = [i for i in ids if i not in test]
    rt, rf = [i for i in rest if i in tum], [i for i in rest if i not in tum]
    valid = (rt[-1:] + rf[-1:] + rt[-2:-1])[:n_valid]
    train = [i for i in rest if i not in valid]
    if not [i for i in train if i in tum]: raise SystemExit(f"no tumour-bearing training case among {train}: use more --cases")
    return train, valid, sorted(test, key=int)

# ---------------------------------------------------------------- scoring
def _counts(pred:np.ndarray, gt:np.ndarray, target:str) -> dict:
    "(intersection, predicted, true) voxel counts per scored class; binary maps are the model's own class"
    p, g = np.asarray(pred), np.asarray(gt)
    out = {}
    if target in ('multiclass', 'liver'):
        pm = p>=1; gm = g>=1
        out['liver'] = (int((pm & gm).sum()), int(pm.sum()), int(gm.sum()))
    if target in ('multiclass', 'tumor'):
        pm = (p>=1) if target=='tumor' else (p==2); gm = g==2
        out['tumor'] = (int((pm & gm).sum()), int(pm.sum()), int(gm.sum()))
    return out

def dice_table(counts:list) -> dict:
    "Per-volume mean and global Dice per class from a list of per-volume `_counts` ('cases': each volume's Dice)"
    res = {'cases': [{k: 1. if p+g==0 else 2*i/(p+g) for k,(i,p,g) in c.items()} for c in counts]}
    for cls in ('liver', 'tumor'):
        cs = [c[cls] for c in counts if cls in c]
        if not cs: res[cls] = (float('nan'), float('nan')); continue
        per = [1. if p+g==0 else 2*i/(p+g) for i,p,g in cs]
        I, P, G = (sum(o[k] for o in cs) for k in range(3))
        res[cls] = (float(np.mean(per)), 1. if P+G==0 else 2*I/(P+G))
    return res

def predictions(model, data:Path, test:list, post=True, tta=None):
    """(prediction, ground truth) label arrays of each test volume, predicted once in its stored geometry by a model file
    or an ensemble (a list), averaged over flips as each model chose (or as `tta` says)"""
    import nibabel as nib
    from lits_fastai.inference import predict_volume
    for c in test:
        vol = next(data.glob(f'volume_pt*/volume-{c}.nii'))
        yield (np.asarray(predict_volume(model, vol, post=post, tta=tta).dataobj),
               np.asarray(nib.load(str(data/'segmentations'/f'segmentation-{c}.nii')).dataobj))

def model_target(model) -> str:
    "The target of a model file, or of an ensemble's (a list or an ensemble folder) first member"
    from lits_fastai.learner import read_contract
    from lits_fastai.inference import ensemble_files
    if not isinstance(model, list) and Path(model).is_dir(): model = ensemble_files(model)[0]
    return read_contract(model[0] if isinstance(model, list) else model).get('target', 'multiclass')

def score_model(model_file, data:Path, test:list, post=True) -> tuple:
    "Dice table of a model file on the test volumes (predicted in their stored geometry), and the seconds it took"
    target, t0 = model_target(model_file), time.perf_counter()
    counts = [_counts(pred, gt, target) for pred, gt in predictions(model_file, data, test, post)]
    return dice_table(counts), time.perf_counter()-t0

# ---------------------------------------------------------------- training through the package
def fit(cache:Path, out:Path, budget:float, epochs:int|None=None, **kw) -> tuple:
    "`train` for about `budget` seconds, or for `epochs`: (model file, training seconds, epochs)"
    from lits_fastai.train import train
    kw = dict(pretrained=False, progress=False, **kw)
    t0 = time.perf_counter()
    if epochs is not None:
        learn, mf = train(cache, out=out, epochs=epochs, **kw)
        return mf, time.perf_counter()-t0, epochs
    if 'budget' in inspect.signature(train).parameters:
        learn, mf = train(cache, out=out, budget=budget, **kw)
        return mf, time.perf_counter()-t0, len(learn.recorder.values)
    learn, mf = train(cache, out=out, epochs=1, **kw)          # no budget in `train`: time one epoch, then fit the budget
    dt = time.perf_counter()-t0
    n = max(1, int(budget // dt))
    if n==1: return mf, dt, 1
    t0 = time.perf_counter()
    learn, mf = train(cache, out=out, epochs=n, **kw)
    return mf, time.perf_counter()-t0, n

def auto_model(model_file) -> tuple:
    "(smp architecture, encoder, input size) of auto's model file"
    from lits_fastai.learner import read_contract
    c = read_contract(model_file)
    arch, enc, kw = 'Unet', 'resnet18', c.get('model_kwargs', {})
    if str(c['arch']).startswith('smp:'):
        parts = c['arch'].split(':')
        arch = parts[1]
        if len(parts)>2: enc = parts[2]
    enc = kw.get('encoder', kw.get('encoder_name', enc))
    size = c['size'] if isinstance(c['size'], int) else int(c['size'][-1])
    return arch, enc, size, c

# ---------------------------------------------------------------- the bare PyTorch loop
def _window(img:np.ndarray) -> np.ndarray:
    "Liver window W150/L30 scaled to [0, 1]"
    return np.clip((np.asarray(img, np.float32) - (30-75)) / 150, 0, 1)

def bare(cache:Path, train_cases:list, test:list, arch:str, encoder:str, size:int, budget:float, bs:int=16, seed:int=0,
         epochs:int|None=None) -> tuple:
    "Plain PyTorch: train for `budget` seconds (or `epochs`), predict the test cases; (Dice table, train s, predict s, epochs)"
    import segmentation_models_pytorch as smp
    import torch.nn.functional as F
    from lits_fastai.cache import open_case
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    xs, ys = [], []
    for c in train_cases:
        im, lb = open_case(cache, c)
        x = torch.from_numpy(_window(im))[:, None]
        y = torch.from_numpy(np.asarray(lb, np.float32))[:, None]
        xs.append(F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False))
        ys.append(F.interpolate(y, size=(size, size), mode='nearest')[:, 0].long())
    X, Y = torch.cat(xs), torch.cat(ys)
    model = getattr(smp, arch)(encoder, encoder_weights=None, in_channels=1, classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    steps, per_epoch, done = 0, math.ceil(len(X)/bs), False
    while not done:
        if epochs is not None and steps >= epochs*per_epoch: break
        perm = torch.randperm(len(X))
        for i in range(0, len(X), bs):
            idx = perm[i:i+bs]
            if len(idx) < 2: continue                          # batch norm needs two samples
            loss = F.cross_entropy(model(X[idx]), Y[idx])
            opt.zero_grad(); loss.backward(); opt.step(); steps += 1
            if time.perf_counter()-t0 >= budget: done = True; break
    t_train = time.perf_counter()-t0
    t0, counts = time.perf_counter(), []
    model.eval()
    with torch.no_grad():
        for c in test:
            im, lb = open_case(cache, c)
            H, W = im.shape[1:]
            x = F.interpolate(torch.from_numpy(_window(im))[:, None], size=(size, size), mode='bilinear', align_corners=False)
            pred = torch.cat([F.interpolate(model(x[i:i+bs]), size=(H, W), mode='bilinear', align_corners=False).argmax(1)
                              for i in range(0, len(x), bs)])
            counts.append(_counts(pred.numpy(), np.asarray(lb), 'multiclass'))
    return dice_table(counts), t_train, time.perf_counter()-t0, steps/per_epoch

# ---------------------------------------------------------------- report
def _f(x): return '-' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.3f}'

def _score(d:dict) -> float: return float(np.nanmean([d['liver'][0], d['tumor'][0]]))

def markdown(rows:list, abl:list, gain:float|None) -> str:
    out = ['| system | epochs | train s | predict s | liver Dice (mean) | liver Dice (global) | tumour Dice (mean) | tumour Dice (global) |',
           '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        d = r['dice']
        ep = f"{r['epochs']:.1f}" if isinstance(r['epochs'], float) else str(r['epochs'])
        out.append(f"| {r['name']} | {ep} | {r['train']:.0f} | {r['predict']:.1f} | {_f(d['liver'][0])} | {_f(d['liver'][1])} | "
                   f"{_f(d['tumor'][0])} | {_f(d['tumor'][1])} |")
    if abl:
        out += ['', '| auto without | as | liver Dice (mean) | tumour Dice (mean) | drop in score | share of the gain over bare |',
                '|---|---|---:|---:|---:|---:|']
        for name, how, d, drop in abl:
            share = '-' if not gain or gain <= 0 or drop is None else f'{100*drop/gain:.0f}%'
            out.append(f"| {name} | {how} | {_f(d['liver'][0])} | {_f(d['tumor'][0])} | {_f(drop)} | {share} |")
    return '\n'.join(out)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--budget', type=float, default=None, help='training seconds per system (default 60; --quick: 8)')
    p.add_argument('--cases', type=int, default=None, help='synthetic cases (default 10; --quick: 6)')
    p.add_argument('--shape', default=None, help='case size XxYxZ (default 128x128x32; --quick: 64x64x24)')
    p.add_argument('--size', type=int, default=None, help="the papers' 2D slice size (default 96; --quick: 64)")
    p.add_argument('--size3d', type=int, default=None, help="the 3D recipes' in-plane size (default 64)")
    p.add_argument('--test', type=int, default=None, help='test cases (default 3; --quick: 2)')
    p.add_argument('--valid', type=int, default=None, help='validation cases (default 2; --quick: 1)')
    p.add_argument('--ltnet-encoder', default='resnet18', help="LT-Net's encoder on a CPU (the recipe's is resnet50)")
    p.add_argument('--only', default=None, help="comma-separated systems to run: auto, bare, ablation, a paper's name, '2d' or '3d'")
    p.add_argument('--skip', default='', help='comma-separated systems to leave out')
    p.add_argument('--ablation-budget', action='store_true', help="train each ablation for the budget (default: for as many epochs as auto's run)")
    p.add_argument('--quick', action='store_true', help='a smoke run of a few minutes: small cases, small budget, 2D papers only')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--keep', default=None, help='folder to keep data, cache and runs in (default: a temporary folder)')
    a = p.parse_args(argv)
    q = a.quick
    budget = a.budget if a.budget is not None else (8. if q else 60.)
    n_cases = a.cases or (6 if q else 10)
    shape = tuple(int(o) for o in (a.shape or ('64x64x16' if q else '128x128x32')).lower().split('x'))
    size, size3d = a.size or (64 if q else 96), a.size3d or 64
    n_test, n_valid = a.test or (2 if q else 3), a.valid or (1 if q else 2)
    torch.set_num_threads(a.threads)
    warnings.filterwarnings('ignore')
    print(f"command: python tests/bench_auto.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip(), flush=True)
    from lits_fastai.recipes import RECIPES
    from lits_fastai.train import train
    has_auto = 'budget' in inspect.signature(train).parameters
    systems = ['auto'] + PAPERS_2D + ([] if q else DEFAULT_3D) + ['bare', 'ablation']
    if a.only:
        want = {o.strip() for o in a.only.split(',') if o.strip()}
        want |= set(PAPERS_2D) if '2d' in want else set()
        want |= set(PAPERS_3D) if '3d' in want else set()
        systems = [s for s in ['auto'] + PAPERS_2D + PAPERS_3D + ['bare', 'ablation'] if s in want]
    systems = [s for s in systems if s not in {o.strip() for o in a.skip.split(',')}]
    tmpd = None if a.keep else tempfile.TemporaryDirectory()
    tmp = Path(a.keep or tmpd.name); tmp.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    try:
        data, cache = build(tmp, n_cases, shape)
        tr, va, te = split(n_cases, n_test, n_valid)
        split_kw = dict(valid_cases=va, test_cases=te)
        print(f"data: {n_cases} realistic synthetic cases of {'x'.join(map(str, shape))} (make_synth seed 0); train {tr}, "
              f"valid {va}, test {te}; budget {budget:g} s per system; torch threads {torch.get_num_threads()}", flush=True)
        if not ('budget' in inspect.signature(train).parameters):
            print("note: train() has no `budget` yet: each system's epoch is timed first, then it is trained for the epochs that fit", flush=True)
        rows, res = [], {}
        def report(name, dice, t_train, t_pred, epochs, note=''):
            res[name] = dice
            rows.append(dict(name=name, dice=dice, train=t_train, predict=t_pred, epochs=epochs))
            print(f"{name:<28} epochs {epochs if not isinstance(epochs, float) else round(epochs, 1):>5}  train {t_train:6.1f} s  "
                  f"predict {t_pred:5.1f} s  liver {_f(dice['liver'][0])} (global {_f(dice['liver'][1])})  "
                  f"tumour {_f(dice['tumor'][0])} (global {_f(dice['tumor'][1])}){note}", flush=True)
        auto_mf, auto_epochs, bare_spec = None, None, ('Unet', 'resnet18', size)
        if 'auto' in systems or 'ablation' in systems:
            if not has_auto: print("auto: not available (train() has no `budget` / arch='auto' yet): skipped with its ablation", flush=True)
            else:
                mf, t, ep = fit(cache, tmp/'runs'/'auto', budget, arch='auto', **split_kw)
                auto_epochs = ep
                dice, tp = score_model(mf, data, te)
                auto_mf = mf
                arch, enc, sz, c = auto_model(mf)
                bare_spec = (arch, enc, sz)
                rk = c.get('recipe', {})
                print(f"auto's plan: {c['arch']} {enc}, size {sz}, context {c.get('context')}, intensity {c.get('intensity', {}).get('kind')}, "
                      f"select {rk.get('select')}, aug {rk.get('aug')}, loss {rk.get('loss')}, schedule {rk.get('schedule')}, "
                      f"post-processing {c.get('postprocess')}", flush=True)
                report('auto', dice, t, tp, ep)
        for name in PAPERS_2D + PAPERS_3D:
            if name not in systems: continue
            r = RECIPES[name]
            kw = dict(arch=name, size=size3d if r.dims==3 else size, **split_kw)
            if name=='ltnet': kw['model_kwargs'] = {'arch': a.ltnet_encoder}
            try:
                mf, t, ep = fit(cache, tmp/'runs'/name, budget, **kw)
                dice, tp = score_model(mf, data, te)
            except Exception as e:
                print(f"{name}: failed ({type(e).__name__}: {str(e)[:300]})", flush=True); continue
            label = f"{name} ({r.target})" if r.target!='multiclass' else name
            report(label, dice, t, tp, ep)
        if 'bare' in systems:
            arch, enc, sz = bare_spec
            dice, t, tp, ep = bare(cache, tr, te, arch, enc, sz, budget)
            report(f'bare PyTorch ({arch} {enc}, {sz}px)', dice, t, tp, ep)
            res['bare'] = dice
        abl = []
        if 'ablation' in systems and auto_mf is not None:
            for name, how, kw in ABLATIONS:
                if 'post' in kw: dice, tp = score_model(auto_mf, data, te, post=kw['post']); t, ep = 0., '(auto)'
                else:
                    mf, t, ep = fit(cache, tmp/'runs'/f"auto-no-{name.split()[0].lower().replace('.', '')}", budget, arch='auto',
                                    epochs=None if a.ablation_budget else auto_epochs, recipe=kw['recipe'], **split_kw)
                    dice, tp = score_model(mf, data, te)
                report(f'auto without {name}', dice, t, tp, ep)
                abl.append((name, how, dice, _score(res['auto']) - _score(dice)))
        gain = _score(res['auto']) - _score(res['bare']) if 'auto' in res and 'bare' in res else None
        if abl:
            print(f"\nscore = mean of liver and tumour per-volume Dice; auto {_f(_score(res['auto']))}"
                  + (f", bare {_f(_score(res['bare']))}, gain {_f(gain)}" if gain is not None else ''))
            for name, how, d, drop in abl:
                share = f"{100*drop/gain:.0f}% of the gain" if gain and gain > 0 else 'share undefined (no gain over bare)'
                print(f"  {name:<16} ({how}): drop {drop:+.3f}, {share}")
            print(f"  sum of the drops {sum(o[3] for o in abl):+.3f} (the rest of the gain is the ingredients together, or noise)")
        print(f"\nwall time {time.perf_counter()-t_all:.0f} s\n")
        print(markdown(rows, abl, gain))
        return 0
    finally:
        if tmpd is not None: tmpd.cleanup()

if __name__ == '__main__': sys.exit(main())
