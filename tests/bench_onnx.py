"""CPU inference speed of an exported ONNX model in ONNX Runtime against the same model in PyTorch, and their agreement.

Both run in one process, interleaved repeat by repeat on the same inputs, so the load of a shared machine falls on
both alike: the same slices (a synthetic CT stack in HU, `--slices` of them), preprocessed by the contract
(`SliceProbs`: intensity, resizing to the contract's size) and pushed through the network in batches of `--bs`. The
time is the median over `--repeats` of a whole pass over the stack (probabilities at the stack's size, as
`lits-predict` computes them); the ratio is PyTorch / ONNX Runtime (> 1: ONNX Runtime faster). Both use the same
number of threads (`--threads`, default `torch.get_num_threads()`). The agreement is the largest absolute difference
of the class probabilities, and the number of voxels whose labels differ. Not collected by pytest.

The model: an untrained system at its published configuration (or `--smoke` for the smoke sizes, `SMOKE_KWARGS`),
LT-Net with a resnet18 encoder by default (`--arch`), at `--size` (128, the recipe's), exported with `export_onnx`.

    OMP_NUM_THREADS=2 python tests/bench_onnx.py                     # LT-Net resnet18, 128x128
    python tests/bench_onnx.py --arch smp:Unet:resnet34 --size 256
"""
import argparse, json, tempfile, time, warnings
from pathlib import Path
import numpy as np
import torch
warnings.simplefilter('ignore')
from lits_fastai.models import build_model, SMOKE_KWARGS, MODEL_INFO
from lits_fastai.learner import MODEL_FORMAT
from lits_fastai.export import export_onnx, load_onnx
from lits_fastai.inference import SliceProbs


def contract(arch, size, kw):
    info = MODEL_INFO[arch]
    return dict(format=MODEL_FORMAT, arch=arch, model_kwargs={**kw, 'n_in': 1, 'n_out': info['n_out']}, dims=2, mode=None,
                classes=['background', 'liver', 'tumor'] if info['n_out']==3 else ['background', 'liver'], size=size,
                intensity={'kind': 'window', 'windows': [[400, 50]]}, context=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='ltnet'); p.add_argument('--size', type=int, default=128)
    p.add_argument('--slices', type=int, default=32); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--repeats', type=int, default=5); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--smoke', action='store_true', help='the smoke-size configuration (SMOKE_KWARGS) instead of the published one')
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    kw = dict(SMOKE_KWARGS.get(a.arch, {})) if a.smoke else ({'arch': 'resnet18'} if a.arch=='ltnet' else {})
    c = json.loads(json.dumps(contract(a.arch, a.size, kw)))
    m = build_model(a.arch, **c['model_kwargs']).eval()
    fn = Path(tempfile.mkdtemp())/'model.onnx'
    t = time.perf_counter(); export_onnx((m, c), fn); t_export = time.perf_counter()-t
    om,oc = load_onnx(fn)
    stack = np.random.default_rng(0).integers(-1000, 1500, (a.slices, 512, 512)).astype(np.int16)
    sp = {'pytorch': SliceProbs(m, c, stack), 'onnxruntime': SliceProbs(om, oc, stack)}
    def run(k):
        t = time.perf_counter()
        ps = [sp[k](range(s, min(s+a.bs, a.slices))) for s in range(0, a.slices, a.bs)]
        return time.perf_counter()-t, torch.cat(ps)
    run('pytorch'); run('onnxruntime')                       # warm-up
    times = {k: [] for k in sp}
    for _ in range(a.repeats):
        for k in sp:
            dt,pr = run(k); times[k].append(dt)
    _,pt = run('pytorch'); _,po = run('onnxruntime')
    binary = pt.shape[1]==1
    lab = lambda q: (q[:,0]>0.5) if binary else q.argmax(1)
    med = {k: float(np.median(v)) for k,v in times.items()}
    print(f"{a.arch}{' (smoke)' if a.smoke else ''} at {a.size}x{a.size}, {a.slices} slices of 512x512 in batches of {a.bs}, "
          f"{torch.get_num_threads()} thread(s), median of {a.repeats}; export {t_export:.1f} s, {fn.stat().st_size/2**20:.1f} MB")
    for k in med: print(f"  {k:12s} {med[k]:7.3f} s  ({a.slices/med[k]:6.1f} slices/s)  runs: {' '.join(f'{o:.3f}' for o in times[k])}")
    print(f"  speed-up of onnxruntime over pytorch: {med['pytorch']/med['onnxruntime']:.2f}x")
    print(f"  largest probability difference: {float((pt-po).abs().max()):.2e}; voxels with another label: {int((lab(pt)!=lab(po)).sum())} of {lab(pt).numel()}")


if __name__ == '__main__': main()
