"""Speed and memory bar of `lits-predict`: whole-volume inference against the bare forward passes of the same model.

The bar: segmenting a 512x512x200 CT volume with `lits-predict` takes at most `--target` (1.15) times as long as the
model's forward passes over the same slices alone, so reading, preprocessing, resizing, post-processing and writing
cost at most 15%. Both are timed in one run, batch by batch (medians over `--repeats` runs), so the load of a shared
machine falls on both alike. Not collected by pytest.

- (a) the package: `predict_files((model, contract), volume.nii, OUT)`, the function `lits-predict MODEL INPUT OUT`
  runs for each volume, from the NIfTI on disk to the mask written: reading the NIfTI, canonical orientation, the
  contract's intensity preprocessing and resizing, forward passes in batches of `--bs`, probabilities resized back to
  512x512, argmax, post-processing (largest liver component, tumour connected to liver, small tumours) and writing
  the uint8 NIfTI in the input's geometry;
- (b) the bare forward passes: the time spent inside `model(x)` during (a), measured by forward hooks on the model
  (the same batches, batch size and input size, in the same run, so the load of a shared machine falls on both
  alike); and, as a cross-check, a separate loop of `model(x)` under `torch.no_grad()` on a ready
  `(bs, channels, size, size)` tensor, as many batches as the volume has slices, nothing else.

The bar is on (a) / forward passes of (a). On a shared machine the separate loop runs minutes apart from (a) and
its ratio moves with the load of the others (on 2 shared cores we saw the same loop take 71 s and 123 s in one run).

Loading the model file happens once per `lits-predict` run, however many volumes it segments; its time is printed
apart, with the ratio it would give added to this one volume.

The model file: LT-Net (the fastai U-Net) with the recipe's input (128x128 slices, liver window + histogram-scaled
channel with bins fitted on the training cases, batch 16), trained for one epoch on four tiny synthetic cases so that
the file carries a genuine preprocessing contract. Its encoder is `--encoder resnet18` instead of the published
resnet50 so that a CPU run takes minutes: the lighter the model, the larger the share of everything around it, so
this is the harder setting for the bar. `--model FILE` uses any other 2D model file instead.

The volume: `synth.synth_case` renders a 512x512 phantom at about 6.5 slices/s on this machine (about 30 s for 200
slices and 2.5 min for 1000), so the benchmark renders 20 slices of 512x512 and repeats each one along z
(`np.repeat`) up to the depth wanted, with the slice spacing divided alike: a stretched but complete abdomen with
liver and tumours, int16 HU, stored in LPS orientation (flipped axes, as many real scans) as an uncompressed `.nii`.

Peak memory: each depth of `--mem-depths` (200 and 1000) runs `predict_files` in a fresh Python process, which prints
its peak resident set size (`ru_maxrss`), its resident size after importing the libraries and loading the model, and
the peak of one batch's forward pass alone. Peak minus resident-after-loading is what whole-volume inference needs
beyond the loaded model (the forward passes' own working memory included).

    .venv/bin/python tests/bench_predict.py                        # the bar: 512x512x200, memory at 200 and 1000 slices
    .venv/bin/python tests/bench_predict.py --depth 32 --mem-depths 32 --size 64   # a quick check of the script

Exit status 0 when the ratio meets the target, 1 otherwise.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import torch

def make_model(tmp:Path, size:int, encoder:str, bs:int) -> Path:
    "An LT-Net model file (recipe input at `size`, light `encoder`) trained for one epoch on tiny synthetic data"
    from lits_fastai.synth import make_synth
    from lits_fastai.train import train
    make_synth(tmp/'tiny', n_cases=4, shape=(64, 64, 16), seed=1)
    _,fn = train(tmp/'tiny', 'ltnet', epochs=1, size=size, bs=bs, valid_cases=['3'], pretrained=False, out=tmp/'run',
                 cache=tmp/'tiny_cache', model_kwargs={'arch': encoder}, progress=False)
    return fn

def make_volume(fn:Path, depth:int, base_depth:int=20, seed:int=7) -> Path:
    "A 512x512x`depth` int16 phantom: `base_depth` rendered slices, each repeated along z (see the docstring)"
    from lits_fastai.synth import synth_case, synth_geometry
    from lits_fastai.core import save_nifti
    img,_,sp = synth_case(seed, (512, 512, base_depth))
    r = -(-depth//base_depth)
    img = np.repeat(img, r, axis=2)[:, :, :depth]
    save_nifti(img, fn, synth_geometry(img.shape, (sp[0], sp[1], sp[2]/r), 'LPS'), dtype=np.int16)
    return fn

def _sync():
    if torch.cuda.is_available(): torch.cuda.synchronize()

class ForwardClock:
    "Seconds spent inside `model(x)` calls, summed (forward hooks on the model)"
    def __init__(self, model):
        self.total,self.n = 0., 0
        self.hooks = [model.register_forward_pre_hook(self.start), model.register_forward_hook(self.stop)]
    def start(self, m, inp): _sync(); self.t0 = time.perf_counter()
    def stop(self, m, inp, out): _sync(); self.total += time.perf_counter() - self.t0; self.n += 1
    def remove(self):
        for h in self.hooks: h.remove()

def time_package(model, vol, out, bs) -> tuple:
    "Seconds of `predict_files` (what `lits-predict` runs) on one volume with a loaded `(module, contract)`, and of its forward passes"
    from lits_fastai.inference import predict_files
    clock = ForwardClock(model[0])
    try:
        _sync(); t0 = time.perf_counter()
        written,failed = predict_files(model, vol, out, bs=bs, pbar=False, overwrite=True)
        _sync(); dt = time.perf_counter() - t0
    finally: clock.remove()
    if failed or not written: raise SystemExit(f"lits-predict failed: {failed}")
    return dt, clock.total

@torch.no_grad()
def time_bare(model, x, n_slices:int) -> float:
    "Seconds of the bare forward passes over `n_slices` slices in batches of `len(x)`"
    bs = len(x)
    _sync(); t0 = time.perf_counter()
    for s in range(0, n_slices, bs): model(x[:min(bs, n_slices-s)])
    _sync(); return time.perf_counter() - t0

_MEM_CODE = r'''
import os, sys, json, resource, time, warnings, torch
warnings.filterwarnings('ignore')
torch.set_num_threads(int(sys.argv[4]))
from lits_fastai.learner import load_model_file
from lits_fastai.inference import predict_files
def rss(): return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])*1024
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024
mc = load_model_file(sys.argv[1])
base = rss()                                         # libraries and the model, resident
with torch.no_grad(): mc[0](torch.rand(int(sys.argv[5]), mc[1]['model_kwargs']['n_in'], *([mc[1]['size']]*2 if isinstance(mc[1]['size'], int) else mc[1]['size'][-2:])))
fwd = peak()                                         # peak of one batch's forward pass alone
t0 = time.perf_counter()
w,f = predict_files(mc, sys.argv[2], sys.argv[3], bs=int(sys.argv[5]), pbar=False, overwrite=True)
print(json.dumps(dict(base=base, fwd=fwd, peak=peak(), seconds=time.perf_counter()-t0, ok=bool(w) and not f)))
'''

def peak_memory(model_file, vol, out, threads, bs) -> dict:
    "Peak and baseline resident memory (bytes) of `predict_files` on `vol` in a fresh process"
    p = subprocess.run([sys.executable, '-c', _MEM_CODE, str(model_file), str(vol), str(out), str(threads), str(bs)],
                       capture_output=True, text=True)
    if p.returncode: raise SystemExit(f"memory run failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--depth', type=int, default=200, help='slices of the timed 512x512 volume')
    p.add_argument('--mem-depths', default='200,1000', help="comma-separated depths for the peak-memory runs ('' to skip)")
    p.add_argument('--size', type=int, default=128, help='model input size (the LT-Net recipe: 128)')
    p.add_argument('--bs', type=int, default=16, help='slices per batch (lits-predict default: 16)')
    p.add_argument('--encoder', default='resnet18', help="LT-Net encoder (the recipe's is resnet50)")
    p.add_argument('--model', default=None, help='use this 2D model file instead of training a small LT-Net')
    p.add_argument('--repeats', type=int, default=1, help='timed runs of each, alternated')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--target', type=float, default=1.15, help='largest allowed ratio lits-predict / bare forward')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    warnings.filterwarnings('ignore')
    from lits_fastai.learner import load_model_file
    print(f"command: .venv/bin/python tests/bench_predict.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        mf = Path(a.model) if a.model else make_model(tmp, a.size, a.encoder, a.bs)
        print(f"model file: {mf if a.model else f'LT-Net, {a.encoder} encoder, trained 1 epoch on 4 tiny synthetic cases'} "
              f"({time.perf_counter()-t0:.1f}s)", flush=True)
        t0 = time.perf_counter()
        model,c = load_model_file(mf)
        t_load = time.perf_counter() - t0
        if c['dims']!=2: raise SystemExit('the bar is for 2D models (slice by slice)')
        size = c['size'] if isinstance(c['size'], int) else c['size'][-1]
        n_in = c['model_kwargs']['n_in']
        n_par = sum(q.numel() for q in model.parameters())
        print(f"model: {c['arch']} {c['model_kwargs'].get('arch', '')}, {n_par/1e6:.1f}M parameters, input {n_in}x{size}x{size} "
              f"({c['intensity']['kind']}), {len(c['classes'])} classes; loading the file takes {t_load:.2f}s; "
              f"torch threads {torch.get_num_threads()}, batch {a.bs}", flush=True)
        t0 = time.perf_counter()
        vol = make_volume(tmp/'in'/'volume-0.nii', a.depth)
        print(f"volume: 512x512x{a.depth} int16, LPS, {vol.stat().st_size/2**20:.0f} MiB ({time.perf_counter()-t0:.1f}s to build)", flush=True)
        x = torch.rand(a.bs, n_in, size, size)
        time_bare(model, x, 2*a.bs)                                   # warm-up: first calls allocate
        tp,tf,tb = [],[],[]
        for i in range(a.repeats):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                if which==0: t,f = time_package((model, c), vol, tmp/'out', a.bs); tp.append(t); tf.append(f)
                else: tb.append(time_bare(model, x, a.depth))
            print(f"run {i+1}: lits-predict {tp[-1]:.2f}s (of which forward passes {tf[-1]:.2f}s), separate bare forward {tb[-1]:.2f}s", flush=True)
        ratios = [t/f for t,f in zip(tp, tf)]
        ratio = statistics.median(ratios)
        ok = ratio <= a.target
        mp,mf_,mb = statistics.median(tp),statistics.median(tf),statistics.median(tb)
        print(f"512x512x{a.depth}: lits-predict (predict_files) {mp:.2f}s = {a.depth/mp:.1f} slices/s; its forward passes {mf_:.2f}s "
              f"-> ratio {ratio:.3f} (bar <= {a.target:.2f}): {'PASS' if ok else 'FAIL'}; everything but the model: {mp-mf_:.2f}s", flush=True)
        print(f"against the separately timed bare forward loop ({mb:.2f}s, load may differ between the two): ratio {mp/mb:.3f}; "
              f"with the one-time loading of the model file ({t_load:.2f}s) added: {(mp+t_load)/mf_:.3f}", flush=True)
        for d in [int(o) for o in a.mem_depths.split(',') if o.strip()]:
            v = vol if d==a.depth else make_volume(tmp/f'in{d}'/'volume-0.nii', d)
            m = peak_memory(mf, v, tmp/f'out{d}', a.threads, a.bs)
            vol_mb = 512*512*d*2/2**20
            G = 2**30
            print(f"peak memory, 512x512x{d} ({vol_mb:.0f} MiB int16): peak RSS {m['peak']/G:.2f} GiB; libraries and model resident "
                  f"{m['base']/G:.2f} GiB (one batch's forward pass alone peaks at {m['fwd']/G:.2f} GiB); whole-volume inference needs "
                  f"{(m['peak']-m['base'])/G:.2f} GiB beyond the loaded model, {(m['peak']-m['base'])/2**20/vol_mb:.1f}x the int16 volume "
                  f"({m['seconds']:.1f}s)", flush=True)
            if v!=vol: v.unlink()
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
