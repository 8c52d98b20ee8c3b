"""How `lits-prepare` and `lits-predict` scale with the depth of a full-size scan: time and peak memory on synthetic
512x512xZ cases, Z = 250, 500, 1000 by default.

    .venv/bin/python tests/bench_scale.py                       # prints the table
    .venv/bin/python tests/bench_scale.py --depths 100 200 --model runs/ltnet/model.safetensors

Each command line runs in a fresh Python process, one per depth: the process imports the package, resets the kernel's
high-water mark of its resident memory (`/proc/self/clear_refs`; 2 ms sampling where that is refused), then calls the
command line function (`lits_prepare()`, `lits_predict()`) with its arguments, exactly as the console script does.
Time is the wall time of that call (imports excluded, so what grows with Z is what is timed; for `lits-prepare`,
which takes seconds, the fastest of `--prepare-repeats` runs); peak memory is the
process's peak resident set size during the call, as a total and as extra over its size before the call (the pages
of memory-mapped input files count). Bars: time per slice stays at most `--linear` (1.5x) the smallest
depth's for both commands, so time grows linearly in Z; `lits-prepare`'s peak extra memory is at most 3x the int16
volume; `lits-predict`'s peak memory is at most `--predict-gb` (4 GB). Exit status 0 when all bars are met.

Where the outputs go: the caches and masks are written to `--out-dir`, by default `/dev/shm` (memory) where it exists,
and dirty pages are flushed (`sync`) before each run. On a virtual machine's disk, writing a 1000-slice cache (0.8 GB)
meets the kernel's write-back throttling, which makes `write` calls slower per byte the more is written at once: the
time then measures the disk, not the package (`--out-dir /some/disk/folder` shows it).

The cases: `synth.synth_case` renders a 512x512 phantom at a few slices per second, so the benchmark renders 16
slices once and writes each depth's volume and label map slice by slice straight into an uncompressed `.nii`
(each rendered slice repeated along z, the slice spacing divided alike: a stretched but complete abdomen with liver
and tumours, int16 HU): writing a 1000-slice case takes seconds and never holds it in memory. The model (unless
`--model`): untrained, at the 128x128 input of the LT-Net recipe with its liver window + histogram scaling fitted on
three small synthetic cases, weights drawn with seed 0. An untrained network gives every voxel the same class (liver,
with seed 0), so post-processing (connected components of the foreground) works on the whole volume: the worst case
for `lits-predict`'s time and memory; a trained model's mask, whose foreground is the liver, costs less (`--model`
measures one). By default smp's Linknet
with a MobileNetV2 encoder, a light model, so that everything around the forward passes (reading, preprocessing,
resizing the probabilities back to 512x512, post-processing the whole volume, writing) weighs as much as it can in
the time; `--arch ltnet` uses LT-Net with a ResNet18 encoder (about 6x slower on a CPU).
Not collected by pytest (the file name does not start with test_).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

from peak_memory import PEAK

ROOT = Path(__file__).resolve().parent.parent

WORKER = PEAK + r'''
mode, args = sys.argv[1], sys.argv[2:]
if mode == 'prepare': from lits_fastai.cli import lits_prepare as main
else: from lits_fastai.cli import lits_predict as main
sys.argv = ['lits-' + mode] + args
rc = 0
with Peak() as p:
    t0 = time.perf_counter()
    try: main()
    except SystemExit as e: rc = e.code or 0
    dt = time.perf_counter() - t0
print(json.dumps(dict(seconds=dt, peak=p.peak, base=p.base, rc=rc, method='VmHWM' if p.hwm else 'sampling')))
'''

def _write_nifti(fn, slices, depth, spacing, dtype):
    "Write the (X, Y, depth) volume whose slice z is `slices[..., z*n//depth]` to `fn`, slice by slice, in NIfTI's Fortran order"
    import nibabel as nib
    X, Y, n = slices.shape
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.])                # LPS storage, as many scans
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((X, Y, depth)); hdr.set_data_dtype(dtype); hdr.set_xyzt_units('mm')
    hdr.set_qform(aff, 1); hdr.set_sform(aff, 1); hdr.set_data_offset(352); hdr.set_slope_inter(1, 0)
    with open(fn, 'wb') as f:
        f.write(hdr.binaryblock); f.write(b'\0' * (352 - len(hdr.binaryblock)))
        for z in range(depth): f.write(np.asarray(slices[:, :, z*n//depth], dtype).tobytes(order='F'))
    return fn

def make_cases(root, depths, n_render=16):
    "One 512x512xZ case per depth (flat layout: `root/Z/volume-0.nii`, `segmentation-0.nii`); returns their folders"
    from lits_fastai.synth import synth_case
    t0 = time.perf_counter()
    img, lbl, spc = synth_case(0, shape=(512, 512, n_render))
    t1 = time.perf_counter()
    out = {}
    for z in depths:
        d = Path(root)/f'z{z}'; d.mkdir(parents=True)
        sp = (spc[0], spc[1], spc[2]*n_render/z)
        # the volume is stored as LPS: flip x and y of the canonical (RAS) rendering
        _write_nifti(d/'volume-0.nii', img[::-1, ::-1], z, sp, np.int16)
        _write_nifti(d/'segmentation-0.nii', lbl[::-1, ::-1], z, sp, np.uint8)
        out[z] = d
    print(f"rendered {n_render} slices of 512x512 in {t1-t0:.1f} s; wrote {len(depths)} cases ({', '.join(map(str, depths))} slices) "
          f"in {time.perf_counter()-t1:.1f} s")
    return out

def make_model(root, arch='linknet'):
    "An untrained 128x128 model file ('linknet': smp Linknet + MobileNetV2; 'ltnet': LT-Net + ResNet18) with the LT-Net recipe's preprocessing"
    from lits_fastai.synth import make_synth
    from lits_fastai.cache import prepare_cache
    from lits_fastai.data import slice_dls
    from lits_fastai.learner import build_learner, save_model_file
    import torch
    torch.manual_seed(0)                      # the same untrained weights, so the same masks, in every run
    data = make_synth(Path(root)/'tiny', n_cases=3, seed=0, shape=(64, 64, 8))
    prepare_cache(data, Path(root)/'tiny_cache', progress=False)
    dls = slice_dls(Path(root)/'tiny_cache', size=128, bs=4, valid_cases=['2'])
    if arch == 'ltnet': learn = build_learner(dls, 'ltnet', pretrained=False, model_kwargs={'arch': 'resnet18'}, path=Path(root)/'run')
    else:
        from lits_fastai.recipes import get_recipe
        r = get_recipe('ltnet', arch='smp:Linknet:mobilenet_v2', model_kwargs={})      # the LT-Net recipe's input, a light model
        learn = build_learner(dls, recipe=r, pretrained=False, path=Path(root)/'run')
    return save_model_file(learn, Path(root)/f'{arch}.safetensors')

def run(mode, *args):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(o for o in (str(ROOT), os.environ.get('PYTHONPATH')) if o)}
    p = subprocess.run([sys.executable, '-c', WORKER, mode, *map(str, args)], capture_output=True, text=True, env=env)
    if p.returncode: sys.exit(f"{mode} failed:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if r['rc']: sys.exit(f"lits-{mode} exited {r['rc']}:\n{p.stderr[-3000:]}")
    return r

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--depths', type=int, nargs='+', default=[250, 500, 1000], help='slices per case')
    ap.add_argument('--model', default=None, help='a 2D model file for lits-predict (default: an untrained model made by --arch)')
    ap.add_argument('--arch', default='linknet', choices=['linknet', 'ltnet'], help='the untrained model: smp Linknet + MobileNetV2, or LT-Net + ResNet18')
    ap.add_argument('--bs', type=int, default=16, help='lits-predict batch size')
    ap.add_argument('--prepare-repeats', type=int, default=3, help='lits-prepare runs per depth (the fastest counts)')
    ap.add_argument('--linear', type=float, default=1.5, help='bar: largest / smallest time per slice')
    ap.add_argument('--prepare-x', type=float, default=3., help='bar: lits-prepare peak extra memory, in int16 volumes')
    ap.add_argument('--predict-gb', type=float, default=4., help='bar: lits-predict peak memory in GB')
    ap.add_argument('--workdir', default=None, help='folder for the cases (default: a temporary folder)')
    ap.add_argument('--out-dir', default='/dev/shm' if os.path.isdir('/dev/shm') else None, help='folder for the caches and masks')
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp, tempfile.TemporaryDirectory(dir=a.out_dir) as outs:
        tmp, outs = Path(tmp), Path(outs)
        cases = make_cases(tmp/'data', sorted(a.depths))
        model = a.model or make_model(tmp/'model', a.arch)
        print(f"outputs written to {outs}")
        rows = []
        for z, d in cases.items():
            vol_mb = 512*512*z*2/1e6
            prs = []
            for i in range(a.prepare_repeats):              # prepare takes seconds: the fastest of a few runs
                os.sync()
                prs.append(run('prepare', d, outs/f'cache{z}_{i}', '--n-workers', 0))
                subprocess.run(['rm', '-rf', str(outs/f'cache{z}_{i}')])
            pr = min(prs, key=lambda o: o['seconds'])
            os.sync()
            pd_ = run('predict', model, d/'volume-0.nii', outs/f'pred{z}'/'segmentation-0.nii', '--bs', a.bs)
            rows.append(dict(z=z, vol_mb=vol_mb, prep_s=pr['seconds'], prep_x=(pr['peak']-pr['base'])/1e6/vol_mb, prep_peak=pr['peak']/1e6,
                             pred_s=pd_['seconds'], pred_peak=pd_['peak']/1e6, pred_extra=(pd_['peak']-pd_['base'])/1e6, method=pr['method']))
            subprocess.run(['rm', '-rf', str(outs/f'pred{z}')])
    r0 = rows[0]
    print(f"\n{'Z':>5} {'int16 MB':>9} | {'prepare s':>9} {'s/slice ratio':>13} {'peak MB':>8} {'extra/int16':>11} | "
          f"{'predict s':>9} {'s/slice ratio':>13} {'peak MB':>8} {'extra MB':>8}")
    for r in rows:
        r['prep_lin'] = (r['prep_s']/r['z']) / (r0['prep_s']/r0['z']); r['pred_lin'] = (r['pred_s']/r['z']) / (r0['pred_s']/r0['z'])
        print(f"{r['z']:>5} {r['vol_mb']:>9.0f} | {r['prep_s']:>9.2f} {r['prep_lin']:>13.2f} {r['prep_peak']:>8.0f} {r['prep_x']:>11.2f} | "
              f"{r['pred_s']:>9.2f} {r['pred_lin']:>13.2f} {r['pred_peak']:>8.0f} {r['pred_extra']:>8.0f}")
    print(f"(s/slice ratio: seconds per slice relative to Z={r0['z']}; 1.00 is exactly linear. Peak memory by {r0['method']}.)")
    lin = max(max(r['prep_lin'], r['pred_lin']) for r in rows)        # slower per slice at larger Z: worse than linear
    px, pgb = max(r['prep_x'] for r in rows), max(r['pred_peak'] for r in rows)/1e3
    checks = [(f"time per slice at most {a.linear}x the smallest depth's (worst {lin:.2f}x)", lin <= a.linear),
              (f"lits-prepare peak extra memory <= {a.prepare_x}x the int16 volume (worst {px:.2f}x)", px <= a.prepare_x),
              (f"lits-predict peak memory <= {a.predict_gb} GB (worst {pgb:.2f} GB)", pgb <= a.predict_gb)]
    for msg, ok in checks: print(f"{'PASS' if ok else 'FAIL'}: {msg}")
    sys.exit(0 if all(ok for _, ok in checks) else 1)

if __name__ == '__main__': main()
