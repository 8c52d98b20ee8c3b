"""`auto` on real CT: held-out Dice of the self-configured recipe against a bare PyTorch loop and the papers' recipes,
over several seeds, on slabs of the real LiTS scan in `../shared/real` (or on the realistic phantom with `--data phantom`).

Data (`--data DIR`, default `../shared/real`): the two slabs of LiTS volume 117 described in that folder's README, cut
into contiguous sub-slabs that act as cases, each written as a NIfTI pair with its own geometry (the scan's affine,
shifted to the slab's first slice): cases 11700 (slices 0-27) and 11701 (28-55) are trained on, 11702 (56-67) and 11703
(68-79) are the test set, 1172 (80-87, the folder's validation slab) is every system's validation case (checkpoint and
post-processing choice). `--data phantom` uses `make_synth(realistic=True)` cases of `--shape` instead, split the same
way as `bench_auto.py` (tumour-bearing test and validation cases, a tumour-free test case). Nothing is tuned to the test
slabs: they are scored once per run.

Systems, each given the same training budget (`--budget` seconds; `--epochs N` trains every system N epochs instead):
- `auto`: `train(cache, 'auto', budget=...)`, the package's plan (`--auto-size S`: its largest patch side, as
  `lits-train --size S`: below the median slice the plan coarsens the pixel; `--recipe-kw '{"tumour_stage": true}'`
  adds the tumour stage, which the plan leaves off);
- with `--folds K`, `auto` is `train_folds(cache, 'auto', n_folds=K)` instead: K runs on patient folds of the training
  and validation cases together, each validated on its fold, as one ensemble post-processed out of fold (nnU-Net's final
  model; the budget shared by the folds), and the bare loop trains on all those cases too;
- with `--refit`, `auto` is `train(..., refit=True)`: one run validated on the validation cases (its choices), then the
  same recipe trained again with them in training (the budget shared by the two runs); the bare loop trains on the
  training and validation cases too;
- `auto1`: the same plan with its tumour stage refused (`recipe={'tumour_stage': False}`): one stage at the coarse pixel;
- `bare`: plain PyTorch, segmentation-models-pytorch U-Net with `--bare-encoder` (default resnet50) from scratch, the liver
  window W150/L30, cross-entropy, Adam 1e-3, no augmentation, no post-processing (`bench_auto.bare`);
- the papers' 2D recipes (`ltnet` with a resnet18 encoder, `hybrid`, `cafct`, `dyntransnet2d`) at `--size` px and the
  3D `unet3d` at `--size3d`, with `--papers`.
Seeds: `--seeds 0,1,2`; the same seed gives the same split, weights and augmentation. `--ensemble` adds a row per
system: its seeds' models averaged as one ensemble (the training time of all of them). `--tta` adds two rows per system:
its models scored again never and always averaging over flips at test time (`predict_volume(..., tta=False/True)`;
its own row follows each model's choice: `auto` measures the flips on its validation cases).

Scores on the test cases, in their stored geometry (`predict_volume` with each model's post-processing and flips): per-volume liver
Dice (labels 1+2) and tumour Dice (label 2), lesion recall (LiTS rule, IoU > 0.5 after merging, `evaluate.detect_lesions`),
training seconds and epochs (and each seed's liver and tumour Dice per test case); then the mean and SD over the
seeds per system.

    .venv/bin/python tests/bench_real.py                       # auto and bare, 3 seeds, 150 s each
    .venv/bin/python tests/bench_real.py --papers              # the papers' recipes too
    .venv/bin/python tests/bench_real.py --data phantom        # the same on realistic phantom cases
    .venv/bin/python tests/bench_real.py --only auto --recipe-kw '{"aug": null}'   # a variant of auto
    .venv/bin/python tests/bench_real.py --only auto,auto1 --auto-size 64 --recipe-kw '{"tumour_stage": true}'
                                                               # the tumour stage against one coarse stage
    .venv/bin/python tests/bench_real.py --folds 3 --epochs 20  # auto as an ensemble of 3 folds, every labelled case trains
    .venv/bin/python tests/bench_real.py --refit --epochs 20    # auto validated, then refitted with its validation cases

Not collected by pytest (the file name does not start with test_); nothing in the package depends on `../shared/real`.
"""
import argparse, json, math, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_auto as B

SLABS = [('11700', '1170', 0, 28), ('11701', '1170', 28, 56), ('11702', '1170', 56, 68), ('11703', '1170', 68, 80),
         ('1172', '1172', 0, 8)]
REAL_SPLIT = (['11700', '11701'], ['1172'], ['11702', '11703'])    # train, valid, test
PAPERS = ['ltnet', 'hybrid', 'cafct', 'dyntransnet2d', 'unet3d']

def real_data(src:Path, out:Path) -> Path:
    "The slabs of `SLABS` as a Kaggle-layout folder of NIfTI pairs, each with its slab's geometry"
    import nibabel as nib
    (out/'volume_pt1').mkdir(parents=True, exist_ok=True); (out/'segmentations').mkdir(exist_ok=True)
    for case, scan, z0, z1 in SLABS:
        vi, si = (nib.load(str(src/f'{k}-{scan}.nii.gz')) for k in ('volume', 'segmentation'))
        aff = vi.affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, z0], [0, 0, 0, 1.]])
        for img, fn in ((vi, out/'volume_pt1'/f'volume-{case}.nii'), (si, out/'segmentations'/f'segmentation-{case}.nii')):
            a = np.asarray(img.dataobj)[..., z0:z1]
            nib.save(nib.Nifti1Image(a.astype(img.get_data_dtype()), aff, img.header), str(fn))
    return out

def prepare(data:Path, tmp:Path) -> Path:
    from lits_fastai.cache import prepare_cache
    res = prepare_cache(data, tmp/'cache', progress=False, n_workers=0)
    if res.failed: raise SystemExit(f"cache failed: {res.failed}")
    return tmp/'cache'

def run_system(name, cache, data, split, seed, tmp, a, recipe_kw=None):
    "One system trained with one seed: dict of scores"
    tr, va, te = split
    kw = dict(valid_cases=va, test_cases=te, seed=seed)
    if name=='bare':
        torch.manual_seed(seed); np.random.seed(seed)
        budget = a.budget if a.epochs is None else 1e9
        d, t, tp, ep = B.bare(cache, tr + (va if a.folds or a.refit else []), te, 'Unet', a.bare_encoder, a.size, budget, seed=seed,
                              epochs=a.epochs)
        return dict(liver=d['liver'][0], tumor=d['tumor'][0], recall=float('nan'), per_case=per_case(d, te), train=t,
                    epochs=ep)
    if name in ('auto', 'auto1') and a.folds: return fit_folds(name, cache, data, te, seed, tmp, a, recipe_kw)
    if name in ('auto', 'auto1'):
        kw.update(arch='auto', recipe={**(recipe_kw or {}), **({'tumour_stage': False} if name=='auto1' else {})} or None)
        if a.auto_size: kw['size'] = a.auto_size
        if a.refit: kw['refit'] = True
    else:
        from lits_fastai.recipes import RECIPES
        kw.update(arch=name, size=a.size3d if RECIPES[name].dims==3 else a.size)
        if name=='ltnet': kw['model_kwargs'] = {'arch': 'resnet18'}
    mf, t, ep = B.fit(cache, tmp/'runs'/f'{name}-{seed}', a.budget, epochs=a.epochs, **kw)
    return dict(**score(mf, data, te), train=t, epochs=ep, model=mf)

def fit_folds(name, cache, data, test, seed, tmp, a, recipe_kw=None) -> dict:
    "`auto` (or `auto1`) as `train_folds` over every case but the test cases: dict of scores"
    from lits_fastai.train import train_folds
    recipe = {**(recipe_kw or {}), **({'tumour_stage': False} if name=='auto1' else {})} or None
    t0 = time.perf_counter()
    ens = train_folds(cache, 'auto', n_folds=a.folds, out=tmp/'runs'/f'{name}-{seed}', epochs=a.epochs, recipe=recipe,
                      budget=None if a.epochs else a.budget, test_cases=test, seed=seed, pretrained=False, progress=False,
                      **({'size': a.auto_size} if a.auto_size else {}))
    t = time.perf_counter() - t0
    ep = np.mean([len(f.read_text().splitlines()) - 1 for f in sorted(ens.glob('fold_*/history.csv'))])
    return dict(**score(ens, data, test), train=t, epochs=ep, model=ens)

def score(model, data:Path, test:list, tta=None) -> dict:
    """Liver and tumour Dice, and lesion recall summed over `test` (detected / true lesions), of a model file or an
    ensemble (a list of model files), each test volume predicted once in its stored geometry (averaged over flips as
    each model chose, or as `tta` says)"""
    from lits_fastai.evaluate import detect_lesions
    target, counts, det, n = B.model_target(model), [], 0, 0
    for pred, gt in B.predictions(model, data, test, tta=tta):
        counts.append(B._counts(pred, gt, target))
        r = detect_lesions(pred==2, gt==2)
        det, n = det + r['n_detected'], n + r['n_gt_lesions']
    d = B.dice_table(counts)
    return dict(liver=d['liver'][0], tumor=d['tumor'][0], recall=det/n if n else float('nan'),
                per_case=per_case(d, test))

def per_case(d:dict, test:list) -> str:
    "Each test case's liver/tumour Dice from a `dice_table`"
    return ' '.join(f"{c} {v.get('liver', math.nan):.3f}/{v.get('tumor', math.nan):.3f}"
                    for c,v in zip(test, d['cases']))

def ensemble_rows(rows:list, data:Path, test:list) -> list:
    "One row per system trained with several seeds: its seeds' models averaged (`lits-predict` on an ensemble folder)"
    out = []
    for name in dict.fromkeys(r['system'] for r in rows if r.get('model')):
        rs = [r for r in rows if r['system']==name]
        if len(rs) < 2: continue
        out.append(dict(system=f'{name}, ensemble of its seeds', seed=-1, members=len(rs), **score([r['model'] for r in rs], data, test),
                        train=sum(r['train'] for r in rs), epochs=np.mean([float(r['epochs']) for r in rs])))
    return out

def tta_rows(rows:list, data:Path, test:list) -> list:
    """Each trained model scored again never and always averaging over flips at test time (`predict_volume(...,
    tta=False/True)`; its own row follows its model's choice): two rows per system and seed"""
    return [dict(system=f"{r['system']}, {name} flips", seed=r['seed'], **score(r['model'], data, test, tta=t),
                 train=r['train'], epochs=r['epochs']) for t,name in ((False, 'never'), (True, 'always'))
            for r in rows if r.get('model')]

def summary(rows:list) -> str:
    "Mean and SD over the seeds of each system; an ensemble row is one model, scored once"
    out = ['| system | seeds | liver Dice | tumour Dice | lesion recall | train s | epochs |', '|---|---:|---:|---:|---:|---:|---:|']
    for name in dict.fromkeys(r['system'] for r in rows):
        rs = [r for r in rows if r['system']==name]
        def f(k):
            v = [r[k] for r in rs]
            if all(math.isnan(o) for o in v): return '-'
            return f"{np.nanmean(v):.3f}" + (f" ± {np.nanstd(v, ddof=1):.3f}" if len(rs) > 1 else '')
        n = rs[0].get('members', len(rs))
        out.append(f"| {name} | {n} | {f('liver')} | {f('tumor')} | {f('recall')} | {np.mean([r['train'] for r in rs]):.0f} | "
                   f"{np.mean([float(r['epochs']) for r in rs]):.1f} |")
    return '\n'.join(out)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', default=str(Path(__file__).parents[1].parent/'shared'/'real'), help="folder of the real slabs, or 'phantom'")
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--budget', type=float, default=150., help='training seconds per system and seed')
    p.add_argument('--epochs', type=int, default=None, help='train every system this many epochs instead of a budget')
    p.add_argument('--only', default='auto,bare', help='comma-separated systems: auto, bare, or a paper recipe')
    p.add_argument('--papers', action='store_true', help="add the papers' recipes")
    p.add_argument('--recipe-kw', default=None, help="JSON of Recipe fields for auto, e.g. '{\"aug\": null}'; the "
                   "plan takes them as given and plans the rest around them (with a budget, its encoder is timed on that input)")
    p.add_argument('--size', type=int, default=128, help='2D input size of the papers and the bare loop')
    p.add_argument('--size3d', type=int, default=64)
    p.add_argument('--auto-size', type=int, default=None, help="auto's largest patch side (default: the plan's, 128 on a CPU)")
    p.add_argument('--bare-encoder', default='resnet50')
    p.add_argument('--shape', default='128x128x32', help='phantom case size')
    p.add_argument('--cases', type=int, default=10, help='phantom cases')
    p.add_argument('--folds', type=int, default=None, help="auto as an ensemble of this many folds of the training and "
                   "validation cases (train_folds); the bare loop trains on all of them")
    p.add_argument('--refit', action='store_true', help="auto chooses on the validation cases, then trains again with "
                   "them (train(..., refit=True)); the bare loop trains on them too")
    p.add_argument('--ensemble', action='store_true', help="also score each system's seeds as one ensemble")
    p.add_argument('--tta', action='store_true', help="also score each model never and always flipping at test time")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--keep', default=None, help='folder to keep data, cache and runs in')
    a = p.parse_args(argv)
    if a.folds and a.ensemble: p.error('--folds already ensembles each system: not with --ensemble')
    if a.folds and a.refit: p.error('--folds trains every labelled case already: not with --refit')
    torch.set_num_threads(a.threads); warnings.filterwarnings('ignore')
    print(f"command: python tests/bench_real.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip(), flush=True)
    systems = [o.strip() for o in a.only.split(',') if o.strip()] + (PAPERS if a.papers else [])
    rk = json.loads(a.recipe_kw) if a.recipe_kw else None
    tmpd = None if a.keep else tempfile.TemporaryDirectory()
    tmp = Path(a.keep or tmpd.name); tmp.mkdir(parents=True, exist_ok=True)
    try:
        if a.data=='phantom':
            shape = tuple(int(o) for o in a.shape.lower().split('x'))
            data, cache = B.build(tmp, a.cases, shape)
            split = B.split(a.cases, 3, 2)
        else:
            src = Path(a.data)
            if not (src/'volume-1170.nii.gz').exists(): raise SystemExit(f"{src}: no real LiTS slabs here (volume-1170.nii.gz): use --data phantom")
            data = real_data(src, tmp/'data'); cache = prepare(data, tmp); split = REAL_SPLIT
        print(f"data: {a.data}; " + (f"{a.folds} folds of {split[0] + split[1]}" if a.folds else
                                      f"train {split[0]}, valid {split[1]}" + (' (then refit on both)' if a.refit else '')) + f", test {split[2]}; "
              + (f"{a.epochs} epochs" if a.epochs else f"budget {a.budget:g} s") + f" per system; seeds {a.seeds}", flush=True)
        rows = []
        for seed in [int(s) for s in a.seeds.split(',')]:
            for name in systems:
                r = run_system(name, cache, data, split, seed, tmp, a, rk)
                rows.append(dict(system=name, seed=seed, **r))
                print(f"{name:<14} seed {seed}  liver {r['liver']:.3f}  tumour {r['tumor']:.3f}  lesion recall {r['recall']:.2f}  "
                      f"train {r['train']:.0f} s  epochs {float(r['epochs']):.1f}  "
                      f"per case (liver/tumour) {r.get('per_case', '-')}", flush=True)
        extra = tta_rows(rows, data, split[2]) if a.tta else []
        if a.ensemble: extra += ensemble_rows(rows, data, split[2])
        rows += extra
        print('\n' + summary(rows))
        return 0
    finally:
        if tmpd is not None: tmpd.cleanup()

if __name__ == '__main__': sys.exit(main())
