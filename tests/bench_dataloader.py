"""Is the input pipeline ever the bottleneck? DataLoader throughput against LT-Net's training throughput.

Builds a synthetic cache of full-size (512x512) cases with `make_synth` + `prepare_cache`, then measures on this machine:

- the slice DataLoader of `lits_fastai.data.slice_dls`: 256x256 liver-window slices, training augmentation
  (fastai's `aug_transforms` by default, `--aug hybrid` for the albumentations list), batch size 16, slices per second
  delivered to the device with the augmentation done;
- LT-Net's training step at the same shape: fastai `create_unet_model(resnet50, n_out=3, img_size=(256,256),
  pretrained=False)`, forward + cross-entropy + backward + SGD step on random batches (bf16 autocast on a GPU, as
  `build_learner` trains), slices per second after warm-up.

It prints both rates and their ratio, and PASS when the DataLoader delivers at least `--target` (3) times what LT-Net
consumes. Exit status 0 on PASS, 1 otherwise. Not collected by pytest (the name does not start with `test_`).

    .venv/bin/python tests/bench_dataloader.py                      # defaults: 6 cases of 512x512x64, 4 workers
    .venv/bin/python tests/bench_dataloader.py --steps 1 --warmup 1 # on a CPU, where one LT-Net step takes minutes
"""
import argparse, os, sys, tempfile, time, json, warnings
from pathlib import Path
import numpy as np
import torch

def build_cache(tmp:Path, n_cases:int, depth:int, size:int, seed:int) -> Path:
    "A synthetic LiTS-layout data set of `n_cases` full-size cases, prepared into a slice cache"
    from lits_fastai.synth import make_synth
    from lits_fastai.cache import prepare_cache
    data, cache = tmp/'data', tmp/'cache'
    make_synth(data, n_cases=n_cases, seed=seed, shape=(size, size, depth))
    prepare_cache(data, cache, progress=False)
    return cache

def _sync(device):
    if torch.device(device).type=='cuda': torch.cuda.synchronize()

def bench_dataloader(cache, size=256, bs=16, aug='fastai', num_workers=4, n_batches=40, warmup=5, seed=42) -> dict:
    "Slices per second that `slice_dls` delivers to its device, training set with augmentation"
    from lits_fastai.data import slice_dls
    dls = slice_dls(cache, size=size, bs=bs, aug=aug, num_workers=num_workers, seed=seed, valid_pct=0.2)
    dl, n, t0 = dls.train, 0, None
    while n < warmup + n_batches:
        for x,y in dl:
            n += 1
            if n==warmup: _sync(dls.device); t0 = time.perf_counter()
            if n>=warmup + n_batches: break
    _sync(dls.device)
    dt = time.perf_counter() - t0
    return dict(slices_per_s=n_batches*bs/dt, batches=n_batches, seconds=dt, device=str(dls.device), x=list(x.shape),
                train_slices=len(dls.train_ds), num_workers=num_workers, aug=aug)

def bench_ltnet(size=256, bs=16, n_in=1, steps=3, warmup=1, device=None, amp=True) -> dict:
    "Slices per second of LT-Net training steps (forward, backward, SGD) on random batches"
    from fastai.vision.learner import create_unet_model
    from torchvision.models import resnet50
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    model = create_unet_model(resnet50, n_out=3, img_size=(size, size), pretrained=False, n_in=n_in).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(bs, n_in, size, size, device=device); y = torch.randint(0, 3, (bs, size, size), device=device)
    use_amp = amp and device.type=='cuda'
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    for _ in range(warmup): step()
    _sync(device); t0 = time.perf_counter()
    for _ in range(steps): step()
    _sync(device); dt = time.perf_counter() - t0
    return dict(slices_per_s=steps*bs/dt, steps=steps, seconds=dt, device=str(device), amp=str(dtype) if use_amp else 'fp32',
                params_M=round(sum(p.numel() for p in model.parameters())/1e6, 1))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cache', help='an existing cache to read (default: build a synthetic one in a temporary folder)')
    p.add_argument('--n-cases', type=int, default=6); p.add_argument('--depth', type=int, default=64)
    p.add_argument('--case-size', type=int, default=512, help='in-plane size of the synthetic cases')
    p.add_argument('--size', type=int, default=256); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--aug', default='fastai', choices=['fastai', 'hybrid'])
    p.add_argument('--num-workers', type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument('--batches', type=int, default=40); p.add_argument('--steps', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1, help='LT-Net warm-up steps')
    p.add_argument('--target', type=float, default=3.); p.add_argument('--seed', type=int, default=42)
    p.add_argument('--json', help='also write the results to this JSON file')
    a = p.parse_args(argv)
    warnings.filterwarnings('ignore')
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cache = Path(a.cache) if a.cache else build_cache(Path(tmp), a.n_cases, a.depth, a.case_size, a.seed)
        t_cache = time.perf_counter() - t0
        dl = bench_dataloader(cache, a.size, a.bs, a.aug, a.num_workers, a.batches, seed=a.seed)
        print(f"DataLoader: {dl['slices_per_s']:.1f} slices/s ({dl['batches']} batches of {a.bs} at {a.size}x{a.size}, aug={a.aug}, "
              f"{a.num_workers} workers, device {dl['device']}; cache of {dl['train_slices']} training slices built in {t_cache:.0f} s)", flush=True)
        tr = bench_ltnet(a.size, a.bs, dl['x'][1], a.steps, a.warmup)
        print(f"LT-Net training: {tr['slices_per_s']:.2f} slices/s ({tr['steps']} steps of {a.bs} after {a.warmup} warm-up, "
              f"resnet50 U-Net {tr['params_M']}M parameters, {tr['amp']}, device {tr['device']})", flush=True)
    ratio = dl['slices_per_s'] / tr['slices_per_s']
    ok = ratio >= a.target
    print(f"ratio DataLoader / LT-Net = {ratio:.1f} (target >= {a.target:g}): {'PASS' if ok else 'FAIL'}")
    if a.json: Path(a.json).write_text(json.dumps(dict(dataloader=dl, ltnet=tr, ratio=ratio, passed=ok, cpus=os.cpu_count(),
                                                      torch=torch.__version__, args=vars(a)), indent=1))
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
