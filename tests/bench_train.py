"""Speed bar: a `lits-train` epoch against a bare PyTorch loop with the same model, data, batch size and loss.

Builds a small synthetic cache (`make_synth` + `prepare_cache` in a temporary folder) and the DataLoaders that
`lits-train` builds for the LT-Net recipe scaled to `--size` (`recipe_dls`: patient-level split, the recipe's intensity
preprocessing and augmentation). Then it times, on the same DataLoaders:

- (a) the package: `learn.fit_recipe(1)` of `build_learner(dls, 'ltnet', pretrained=False)`, i.e. what `lits-train`
  runs for one epoch, with its callbacks (CSV history, per-epoch resumable checkpoint, SaveModelCallback), the
  validation pass and the LiTS metrics;
- (b) a bare PyTorch loop: a fresh copy of the same model (same initial weights), the same loss object
  (`learn.loss_func`), `torch.optim.AdamW` with the recipe's lr / weight decay / betas / eps, forward, backward, step
  over every batch of `dls.train`, then a no-grad validation pass over `dls.valid` computing the loss.

After one warm-up of each, the two are alternated `--repeats` times and the medians compared. It prints the ratio and
PASS when (a) takes at most `--target` (1.10) times (b). Exit status 0 on PASS, 1 otherwise. Not collected by pytest.

On a CPU the LT-Net encoder is made lighter (`--encoder resnet18` instead of the recipe's resnet50) so the timing
takes seconds; the bar is about the overhead of the training loop, which does not depend on the encoder.

    .venv/bin/python tests/bench_train.py                  # defaults: 6 cases of 96x96x32, 64x64 slices, bs 16
    .venv/bin/python tests/bench_train.py --aug none --repeats 5
"""
import argparse, copy, os, statistics, sys, tempfile, time, warnings
from pathlib import Path
import torch

def build_cache(tmp:Path, n_cases:int, shape:tuple, seed:int=0) -> Path:
    "A synthetic LiTS-layout data set prepared into a slice cache"
    from lits_fastai.synth import make_synth
    from lits_fastai.cache import prepare_cache
    data, cache = tmp/'data', tmp/'cache'
    make_synth(data, n_cases=n_cases, seed=seed, shape=shape)
    prepare_cache(data, cache, progress=False, n_workers=0)
    return cache

def _sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()

def time_package(learn) -> float:
    "Seconds of one `lits-train` epoch: `fit_recipe(1)` with every callback of `build_learner`"
    _sync(); t0 = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_recipe(1)
    _sync(); return time.perf_counter() - t0

def make_bare(learn):
    "A fresh copy of `learn.model`, the same loss object and an AdamW optimiser with the recipe's settings"
    r = learn.recipe
    model = copy.deepcopy(learn.model)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.wd, betas=(r.mom, 0.999), eps=1e-8)
    return model, learn.loss_func, opt

def time_bare(model, loss_func, opt, dls) -> float:
    "Seconds of one bare PyTorch epoch: train over `dls.train`, then the validation loss over `dls.valid`"
    _sync(); t0 = time.perf_counter()
    model.train()
    for xb,yb in dls.train:
        loss = loss_func(model(xb), yb)
        loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    tot, n = 0., 0
    with torch.no_grad():
        for xb,yb in dls.valid:
            tot += loss_func(model(xb), yb).item()*len(xb); n += len(xb)
    _sync(); return time.perf_counter() - t0

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cases', type=int, default=6, help='synthetic cases')
    p.add_argument('--shape', default='96x96x32', help='case size XxYxZ')
    p.add_argument('--valid', default='0', help='comma-separated validation case ids')
    p.add_argument('--size', type=int, default=64, help='slice size')
    p.add_argument('--bs', type=int, default=16, help='batch size')
    p.add_argument('--aug', default='recipe', help="augmentation: 'recipe' (the LT-Net recipe's), 'fastai', 'hybrid' or 'none'")
    p.add_argument('--encoder', default='resnet18', help="LT-Net encoder (the recipe's is resnet50)")
    p.add_argument('--repeats', type=int, default=3, help='timed epochs of each, interleaved')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--target', type=float, default=1.10, help='largest allowed ratio package/bare')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    warnings.filterwarnings('ignore')
    from lits_fastai.recipes import get_recipe, scale
    from lits_fastai.train import recipe_dls
    from lits_fastai.learner import build_learner
    shape = tuple(int(o) for o in a.shape.lower().split('x'))
    r = scale(get_recipe('ltnet'), size=a.size, bs=a.bs, epochs=1)
    if a.aug!='recipe': r = get_recipe('ltnet', size=a.size, bs=a.bs, epochs=1, aug=None if a.aug=='none' else a.aug)
    print(f"command: .venv/bin/python tests/bench_train.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        cache = build_cache(tmp, a.cases, shape)
        dls = recipe_dls(cache, r, valid_cases=[o.strip() for o in a.valid.split(',')])
        learn = build_learner(dls, recipe=r, pretrained=False, model_kwargs={'arch': a.encoder}, path=tmp/'run')
        model, loss_func, opt = make_bare(learn)  # same initial weights as the learner's model
        n_par = sum(p.numel() for p in learn.model.parameters())
        print(f"data: {a.cases} synthetic cases of {a.shape} -> {len(dls.train_ds)} train / {len(dls.valid_ds)} valid slices "
              f"(valid cases {a.valid}); {len(dls.train)} train + {len(dls.valid)} valid batches of {a.bs} at {a.size}x{a.size}, "
              f"aug={r.aug}, device={dls.device} ({time.perf_counter()-t0:.1f}s to build)")
        print(f"model: LT-Net (fastai U-Net) with a {a.encoder} encoder for CPU timing (the recipe's is resnet50), "
              f"{n_par/1e6:.1f}M parameters, pretrained=False; loss {type(learn.loss_func).__name__}; "
              f"AdamW lr={r.lr} wd={r.wd}; torch threads={torch.get_num_threads()}")
        print(f"package callbacks: {', '.join(type(c).__name__ for c in learn.cbs)}")
        wp, wb = time_package(learn), time_bare(model, loss_func, opt, dls)
        print(f"warm-up: package {wp:.2f}s, bare {wb:.2f}s")
        tp, tb = [], []
        for i in range(a.repeats):
            # alternate the order so that drifting machine load falls on both alike
            if i % 2: tb.append(time_bare(model, loss_func, opt, dls)); tp.append(time_package(learn))
            else: tp.append(time_package(learn)); tb.append(time_bare(model, loss_func, opt, dls))
            print(f"repeat {i+1}: package {tp[-1]:.2f}s, bare {tb[-1]:.2f}s")
    mp, mb = statistics.median(tp), statistics.median(tb)
    ratio = mp/mb
    ok = ratio <= a.target
    print(f"median epoch: lits-train (fit_recipe) {mp:.2f}s, bare PyTorch {mb:.2f}s -> ratio {ratio:.3f} "
          f"(bar <= {a.target:.2f}): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
