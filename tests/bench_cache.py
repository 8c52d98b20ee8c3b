"""Benchmark `lits-prepare`'s slice cache against the approach people copy from notebooks.

    python tests/bench_cache.py                 # one 512x512x400 int16 synthetic case
    python tests/bench_cache.py --size 256x256x100 --repeats 3

The notebook approach: `nibabel ... get_fdata()` of the volume and the label map (float64), then one windowed 8-bit
PNG per slice and one label PNG per slice with OpenCV. The cache: `lits_fastai.cache.prepare_cache` (serial, so that
all of its memory is in the measured process). Each approach runs in a fresh subprocess on the same files (just
written, so both read from the page cache). Peak extra memory is the process's peak resident set size during the run
minus its resident size before it (after imports), relative to the size of the int16 volume; it includes the pages of
memory-mapped input files.

Targets (issue 3, section 9): the cache is at least 5x faster; its peak extra memory is at most 2x the int16 volume.
Exit status 0 when both are met, 1 otherwise. Not collected by pytest (the file name does not start with test_).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

from peak_memory import PEAK

ROOT = Path(__file__).resolve().parent.parent

WORKER = PEAK + r'''
mode, data, vol, seg, out = sys.argv[1:6]
import numpy as np, nibabel as nib, cv2
from lits_fastai.cache import prepare_cache

def notebook_way():
    v = nib.load(vol).get_fdata()                  # float64 volume, as in most LiTS notebooks
    s = nib.load(seg).get_fdata()
    Path(out).mkdir(parents=True, exist_ok=True)
    for i in range(v.shape[2]):
        img = np.clip((v[:, :, i] + 160) / 400 * 255, 0, 255).astype(np.uint8)   # abdomen window W400 L40
        cv2.imwrite(f'{out}/volume-0_{i}.png', img)
        cv2.imwrite(f'{out}/segmentation-0_{i}.png', s[:, :, i].astype(np.uint8))

def cache_way():
    r = prepare_cache(data, out, n_workers=0, progress=False)
    assert r.cached == ['0'] and not r.failed, r

with Peak() as p:
    t0 = time.perf_counter()
    notebook_way() if mode == 'notebook' else cache_way()
    dt = time.perf_counter() - t0
print(json.dumps(dict(seconds=dt, extra_bytes=p.peak - p.base, method='VmHWM' if p.hwm else 'sampling')))
'''

def run(mode, data, vol, seg, out):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(o for o in (str(ROOT), os.environ.get('PYTHONPATH')) if o)}
    p = subprocess.run([sys.executable, '-c', WORKER, mode, str(data), str(vol), str(seg), str(out)], capture_output=True, text=True, env=env)
    if p.returncode: sys.exit(f"{mode} run failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--size', default='512x512x400', help='X x Y x Z voxels of the synthetic case')
    ap.add_argument('--repeats', type=int, default=1, help='runs of each approach (the fastest is reported)')
    ap.add_argument('--workdir', default=None, help='folder for the data and outputs (default: a temporary folder)')
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from lits_fastai.synth import make_synth
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = make_synth(tmp/'data', n_cases=1, seed=0, shape=a.size)
        vol, seg = next(data.glob('volume_pt*/volume-0.nii')), data/'segmentations'/'segmentation-0.nii'
        import nibabel as nib
        shape = nib.load(str(vol)).shape
        vbytes = int(nib.load(str(vol)).get_data_dtype().itemsize) * shape[0] * shape[1] * shape[2]
        print(f"synthetic case {'x'.join(map(str, shape))} int16 ({vbytes/1e6:.1f} MB volume) made in {time.perf_counter()-t0:.1f} s")
        res = {}
        for mode in ('notebook', 'cache'):
            runs = [run(mode, data, vol, seg, tmp/f'{mode}{i}') for i in range(a.repeats)]
            res[mode] = dict(seconds=min(r['seconds'] for r in runs), extra=max(r['extra_bytes'] for r in runs), method=runs[0]['method'])
            print(f"{mode:>8}: {res[mode]['seconds']:7.2f} s, peak extra memory {res[mode]['extra']/1e6:7.1f} MB "
                  f"= {res[mode]['extra']/vbytes:.2f}x the int16 volume ({res[mode]['method']})")
    speed = res['notebook']['seconds'] / res['cache']['seconds']
    mem = res['cache']['extra'] / vbytes
    ok_speed, ok_mem = speed >= 5, mem <= 2
    print(f"speed-up of the cache over get_fdata + PNG per slice: {speed:.1f}x (target >= 5x): {'PASS' if ok_speed else 'FAIL'}")
    print(f"peak extra memory of the cache: {mem:.2f}x the int16 volume (target <= 2x): {'PASS' if ok_mem else 'FAIL'}")
    sys.exit(0 if ok_speed and ok_mem else 1)

if __name__ == '__main__': main()
