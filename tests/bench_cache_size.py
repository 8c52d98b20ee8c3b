"""A slice cache stored at `--size 256` against the native cache: bytes on disk and the time of a DataLoader epoch.

    .venv/bin/python tests/bench_cache_size.py                  # 4 synthetic cases of 512x512x48
    .venv/bin/python tests/bench_cache_size.py --train          # also one training epoch of a small network on each
    .venv/bin/python tests/bench_cache_size.py --cases 3 --depth 32 --repeats 3

Makes synthetic cases at the in-plane size of LiTS (512x512, `lits_fastai.synth.make_synth`), prepares them twice with
`lits_fastai.cache.prepare_cache`, at native resolution and with `size=256`, and prints for each cache its bytes per
case (image, label and foreground sample) and the time `prepare_cache` took; then the time of one pass over the
training DataLoader of `lits_fastai.data.slice_dls(cache, size=256, bs=16, aug=None)` read from each cache (the
fastest of `--repeats` passes; both caches were just written, so both are read from the page cache: the difference
is the decoding and resizing of the larger slices, and a disk would add the reading of four times the bytes), and
with `--train` the time of one `Learner.fit(1)` epoch of a small fully convolutional network on each. All ratios come
from this one run. Not collected by pytest (the file name does not start with `test_`).
"""
import argparse, os, sys, tempfile, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def case_bytes(cache:Path) -> dict:
    "Bytes of each case folder's files (image.npy, label.npy, fg_sample.npy, meta.json)"
    return {d.name: sum(f.stat().st_size for f in d.iterdir() if f.is_file()) for d in sorted((cache/'cases').iterdir())}


def epoch_time(cache, repeats:int, **kw) -> tuple:
    "The fastest of `repeats` passes over the training DataLoader of `slice_dls(cache, size=256, bs=16, aug=None)`, and its slice count"
    from lits_fastai.data import slice_dls
    dls = slice_dls(cache, size=256, bs=16, aug=None, seed=0, **kw)
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x,y in dls.train: pass
        best = min(best, time.perf_counter() - t0)
    return best, len(dls.train_ds), tuple(x.shape)


def train_time(cache) -> float:
    "Seconds of one training epoch (`Learner.fit(1)`) of a small fully convolutional network on `slice_dls(cache, size=256, bs=16, aug=None)`"
    import torch
    from torch import nn
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    import fastai.callback.progress  # Learner.no_bar
    from lits_fastai.data import slice_dls
    torch.manual_seed(0)
    dls = slice_dls(cache, size=256, bs=16, aug=None, seed=0)
    c = dls.one_batch()[0].shape[1]
    net = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(16, 3, 1))
    learn = Learner(dls, net, loss_func=CrossEntropyLossFlat(axis=1))
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter(); learn.fit(1, 1e-3)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cases', type=int, default=4, help='synthetic cases')
    ap.add_argument('--depth', type=int, default=48, help='slices per case (512x512 each)')
    ap.add_argument('--repeats', type=int, default=3, help='DataLoader passes per cache (the fastest is reported)')
    ap.add_argument('--train', action='store_true', help='also time one training epoch of a small network on each cache')
    ap.add_argument('--workdir', default=None, help='folder for the data and the caches (default: a temporary folder)')
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    warnings.filterwarnings('ignore')
    from lits_fastai.synth import make_synth
    from lits_fastai.cache import prepare_cache, cache_resolution
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = make_synth(tmp/'data', n_cases=a.cases, seed=0, shape=(512, 512, a.depth))
        print(f"{a.cases} synthetic cases of 512x512x{a.depth} made in {time.perf_counter()-t0:.1f} s; {os.cpu_count()} CPUs")
        caches, res = {'native': (tmp/'native', {}), '--size 256': (tmp/'s256', {'size': 256})}, {}
        for name,(c,kw) in caches.items():
            t0 = time.perf_counter()
            r = prepare_cache(data, c, progress=False, **kw)
            dt = time.perf_counter() - t0
            b = case_bytes(c)
            res[name] = dict(prep=dt, bytes=sum(b.values())/len(b), need=r.need_bytes/len(b), hw=cache_resolution(c)['max_hw'])
            print(f"{name:>11}: prepared in {dt:5.1f} s; {res[name]['bytes']/1e6:6.2f} MB per case (estimated {res[name]['need']/1e6:.2f} MB), "
                  f"slices {res[name]['hw'][0]}x{res[name]['hw'][1]}")
        for name,(c,kw) in caches.items():
            res[name]['epoch'], n, shape = epoch_time(c, a.repeats)
            print(f"{name:>11}: one DataLoader epoch (slice_dls size=256 bs=16 aug=None, {n} training slices, batches {shape}) "
                  f"in {res[name]['epoch']:.2f} s = {n/res[name]['epoch']:.0f} slices/s")
        if a.train:
            for name,(c,kw) in caches.items():
                res[name]['train'] = train_time(c)
                print(f"{name:>11}: one training epoch of a small FCN in {res[name]['train']:.2f} s")
    n, s = res['native'], res['--size 256']
    print(f"ratios native / --size 256: bytes per case {n['bytes']/s['bytes']:.2f}x, prepare time {n['prep']/s['prep']:.2f}x, "
          f"DataLoader epoch {n['epoch']/s['epoch']:.2f}x" + (f", training epoch {n['train']/s['train']:.2f}x" if a.train else ''))


if __name__ == '__main__': main()
