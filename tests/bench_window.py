"""Sliding-window inference of a 3D patch model: several windows per forward pass (`sw_batch_size`) against one.

DynTransNet at its CPU size (`models.SMOKE_KWARGS`, untrained: speed does not depend on the weights) over a
`--shape` volume with `--patch` windows at half overlap, timed with `sw_batch_size` 1 and `--sw` (default 4),
alternately, `--repeats` times each, in one run so that the load of a shared machine falls on both alike. Prints the
median times, their ratio (one window a pass / batched: above 1 means batching is faster) and the largest difference
between the two probability maps (they must agree: the same windows, blended the same way). A GPU gains the most from
batching; on a CPU the gain is what larger matrix products buy. Not collected by pytest.

    .venv/bin/python tests/bench_window.py                 # 32x64x64 volume, 32^3 windows, sw 1 vs 4
    .venv/bin/python tests/bench_window.py --device cuda   # the same on a GPU
"""
import argparse, time
import numpy as np, torch
from lits_fastai.models import build_model, SMOKE_KWARGS
from lits_fastai.inference import sliding_window

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shape', default='32x64x64', help='volume D x H x W')
    ap.add_argument('--patch', type=int, default=32, help='cubic window side')
    ap.add_argument('--sw', type=int, default=4, help='windows per forward pass of the batched run')
    ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--device', default='cpu')
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model = build_model('dyntransnet', n_in=1, n_out=1, **SMOKE_KWARGS['dyntransnet']).to(dev).eval()
    x = torch.randn(1, 1, *map(int, a.shape.split('x')), device=dev)
    patch = (a.patch,)*3
    times, outs = {1: [], a.sw: []}, {}
    sliding_window(model, x, patch, sw_batch_size=a.sw)                         # warm-up
    for _ in range(a.repeats):
        for sw in (1, a.sw):
            if dev.type == 'cuda': torch.cuda.synchronize()
            t0 = time.perf_counter(); outs[sw] = sliding_window(model, x, patch, sw_batch_size=sw)
            if dev.type == 'cuda': torch.cuda.synchronize()
            times[sw].append(time.perf_counter() - t0)
    t1, tb = np.median(times[1]), np.median(times[a.sw])
    diff = float((outs[1] - outs[a.sw]).abs().max())
    print(f"device {dev}, volume {a.shape}, windows {a.patch}^3, {a.repeats} repeats")
    print(f"one window a pass: {t1:.3f} s; {a.sw} windows a pass: {tb:.3f} s; ratio {t1/tb:.2f}; largest probability difference {diff:.2e}")
    if diff > 1e-4: raise SystemExit('the batched sliding window differs from one window a pass')

if __name__ == '__main__': main()
