"""Many scans with `lits-predict`: folder throughput of the threaded path against a sequential loop, time to the first
mask, and how well the doubt score ranks the scans whose masks are worst. Not collected by pytest.

(a) Throughput. A folder of `--n-scans` synthetic scans, half of them gzipped NIfTI files and half DICOM series (one
file a slice), is segmented by `predict_files` (what `lits-predict MODEL FOLDER OUT` runs) twice per repeat, in
alternation so that the load of a shared machine falls on both alike: with `workers=0` (read, predict, write one scan
after another in one thread: the sequential loop) and with `--workers` reading threads and one writing thread beside
the model. Printed: scans per minute of each and their ratio, and the seconds from the call (model loading included)
to the first mask file on disk, of each and their ratio (medians over `--repeats`).

(b) Doubt against Dice. `--n-cases` held-out synthetic scans at noise levels from 0 to `--max-noise` HU (Gaussian
noise added to the HU values, so some are easy and some hard) are segmented with flip TTA and `--uncertainty`; each
scan's doubt (mean normalised entropy of the mean class probabilities inside the predicted liver) is set against its
liver Dice with the true mask. Printed: the Spearman rank correlation between doubt and Dice (negative: the more
doubt, the lower the Dice) and the table.

The model: smp's U-Net with a resnet18 encoder, trained `--epochs` epochs at `--size` pixels on four synthetic cases
(a small model trained briefly, as the benchmark needs masks of varying quality, not a good model).

    .venv/bin/python tests/bench_predict_many.py                                     # 8 scans of 128x128x48, 12 noisy cases
    .venv/bin/python tests/bench_predict_many.py --n-scans 6 --shape 64x64x24 --n-cases 8 --repeats 1   # a quick run
"""
import argparse, shutil, statistics, tempfile, threading, time
from pathlib import Path
import numpy as np

def make_model(tmp:Path, size:int, epochs:int) -> Path:
    from lits_fastai.synth import make_synth
    from lits_fastai.train import train
    from lits_fastai.demo import DEMO_RECIPE
    make_synth(tmp/'train', n_cases=4, shape=(64, 64, 16), seed=11)
    _,fn = train(tmp/'train', 'smp:Unet:resnet18', epochs=epochs, size=size, bs=8, valid_cases=['3'], pretrained=False,
                 out=tmp/'run', cache=tmp/'cache', progress=False, recipe=DEMO_RECIPE)
    return fn

def make_folder(folder:Path, n:int, shape) -> Path:
    "`n` synthetic scans in `folder`: even ones as .nii.gz files, odd ones as DICOM series"
    from lits_fastai.core import save_nifti
    from lits_fastai.synth import synth_case, synth_geometry
    from lits_fastai.dicom import write_series
    for i in range(n):
        img,_,sp = synth_case((5, i), shape)
        fn = save_nifti(img, folder/f'volume-{i}.nii.gz' if i%2==0 else folder/'tmp.nii.gz', synth_geometry(img.shape, sp, 'LPS'), dtype=np.int16)
        if i%2: write_series(fn, folder/f'series{i}', number=i); fn.unlink()
    return folder

def first_file(folder:Path, t0:float, found:dict, stop:threading.Event):
    "Record in `found['t']` the seconds from `t0` to the first mask file in `folder`"
    while not stop.is_set():
        if any(p.name.endswith('.nii.gz') and not p.name.startswith('.') for p in folder.glob('*')): found['t'] = time.perf_counter()-t0; return
        time.sleep(0.005)

def timed_run(model, folder, out, workers:int) -> tuple:
    "(seconds, seconds to the first mask) of one `predict_files` over `folder`"
    from lits_fastai.inference import predict_files
    shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
    found,stop = {},threading.Event()
    t0 = time.perf_counter()
    th = threading.Thread(target=first_file, args=(out, t0, found, stop)); th.start()
    written,failed = predict_files(model, folder, out, workers=workers, pbar=False)
    t = time.perf_counter()-t0
    stop.set(); th.join()
    assert not failed and len(written), failed
    return t, found.get('t', t), len(written)

def throughput(a, model, tmp:Path):
    folder = make_folder(tmp/'many', a.n_scans, a.shape)
    res = {0: [], a.workers: []}
    for r in range(a.repeats):
        for w in (0, a.workers): res[w].append(timed_run(model, folder, tmp/f'out{w}', w))
    n = res[0][0][2]
    (s_t, s_f),(p_t, p_f) = [(statistics.median(o[0] for o in res[w]), statistics.median(o[1] for o in res[w])) for w in (0, a.workers)]
    print(f"(a) {n} scans of {'x'.join(map(str, a.shape))} (half .nii.gz, half DICOM series), medians of {a.repeats} alternating runs:")
    print(f"    sequential loop (workers=0): {60*n/s_t:.1f} scans/min, first mask after {s_f:.2f} s")
    print(f"    threaded (workers={a.workers}):      {60*n/p_t:.1f} scans/min, first mask after {p_f:.2f} s")
    print(f"    throughput ratio threaded/sequential: {s_t/p_t:.2f}; time to first mask ratio threaded/sequential: {p_f/s_f:.2f}")

def dice(a, b) -> float:
    s = a.sum() + b.sum()
    return 1. if s == 0 else 2*np.logical_and(a, b).sum()/s

def doubt_vs_dice(a, model, tmp:Path):
    import nibabel as nib, pandas as pd
    from scipy.stats import spearmanr
    from lits_fastai.core import save_nifti
    from lits_fastai.synth import synth_case, synth_geometry
    from lits_fastai.inference import predict_files
    noisy, truth, noise = tmp/'noisy', {}, {}
    for i,sd in enumerate(np.linspace(0, a.max_noise, a.n_cases)):
        img,lbl,sp = synth_case((9, i), a.shape, n_tumors=2)
        img = np.clip(img + np.random.default_rng(i).normal(0, sd, img.shape), -1024, 3071).round().astype(np.int16)
        save_nifti(img, noisy/f'volume-{i}.nii.gz', synth_geometry(img.shape, sp, 'RAS'), dtype=np.int16)   # stored as canonical
        m = str(tmp/'pred'/f'segmentation-{i}.nii.gz')
        truth[m],noise[m] = lbl>=1,sd
    res = predict_files(model, noisy, tmp/'pred', tta=True, uncertainty=True, pbar=False, overwrite=True)
    df = pd.read_csv(res.summary)
    df['dice'] = [dice(np.asarray(nib.load(m).dataobj)>=1, truth[m]) for m in df['mask']]
    df['noise_hu'] = df['mask'].map(noise)
    rho,p = spearmanr(df['doubt'], df['dice'])
    print(f"(b) {len(df)} held-out synthetic scans, Gaussian noise 0 to {a.max_noise:g} HU, flip TTA:")
    print(df[['noise_hu', 'dice', 'doubt', 'liver_ml', 'lesions']].sort_values('noise_hu').to_string(index=False, float_format=lambda v: f'{v:.3f}'))
    print(f"    Spearman rank correlation of doubt with liver Dice: {rho:.3f} (p = {p:.2g}, n = {len(df)})")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n-scans', type=int, default=8); ap.add_argument('--shape', default='128x128x48')
    ap.add_argument('--workers', type=int, default=2); ap.add_argument('--repeats', type=int, default=2)
    ap.add_argument('--n-cases', type=int, default=12); ap.add_argument('--max-noise', type=float, default=300.)
    ap.add_argument('--epochs', type=int, default=6); ap.add_argument('--size', type=int, default=64)
    a = ap.parse_args()
    a.shape = tuple(int(o) for o in a.shape.split('x'))
    tmp = Path(tempfile.mkdtemp(prefix='bench_many_'))
    try:
        t = time.perf_counter(); model = make_model(tmp, a.size, a.epochs)
        print(f"model: smp:Unet:resnet18 at {a.size} px, {a.epochs} epochs on 4 synthetic cases ({time.perf_counter()-t:.0f} s)")
        throughput(a, model, tmp)
        doubt_vs_dice(a, model, tmp)
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
