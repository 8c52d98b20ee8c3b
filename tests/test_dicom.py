"""lits-predict on DICOM: series found in a folder by Series Instance UID give the masks the NIfTI files give, voxel for
voxel; DICOM SEG out reads back equal; a bad series is named in one line while the others go on; outputs get the
user's usual permissions; a rerun skips what is finished. Two command-line runs; the rest in this process."""
import os, shutil
import numpy as np, nibabel as nib, pandas as pd, pydicom, pytest
from conftest import run
from lits_fastai.core import geometry, to_canonical
from lits_fastai.dicom import find_series, read_series, read_seg, write_series

@pytest.fixture(scope='module')
def cases(tmp_path_factory):
    "Two synthetic cases as NIfTI files and as two DICOM series in one folder (names in no order), a model trained two epochs, its NIfTI masks"
    from lits_fastai.synth import make_synth
    from lits_fastai.train import train
    from lits_fastai.demo import DEMO_RECIPE
    from lits_fastai.inference import predict_files
    tmp = tmp_path_factory.mktemp('dicom')
    make_synth(tmp/'data', n_cases=3, shape=(48, 48, 12), seed=5)
    _,mf = train(tmp/'data', 'smp:Unet:resnet18', epochs=2, size=32, bs=8, valid_cases=['2'], pretrained=False, out=tmp/'run',
                 cache=tmp/'cache', progress=False, recipe=DEMO_RECIPE)
    (tmp/'nifti').mkdir()
    for i in (0, 1):
        vol = next((tmp/'data').glob(f'volume_pt*/volume-{i}.nii'))
        shutil.copy(vol, tmp/'nifti'/vol.name)
        write_series(vol, tmp/'dicom'/'study', number=i+1)
    written, failed = predict_files(mf, tmp/'nifti', tmp/'from_nifti', pbar=False)
    assert len(written) == 2 and not failed
    return tmp, mf

UMASK = os.umask(0o022); os.umask(UMASK)   # this process's umask, which the command line inherits

def canonical(fn):
    img = nib.load(fn)
    return to_canonical(np.asarray(img.dataobj), geometry(img)), geometry(img).canonical_affine

def test_a_dicom_folder_gives_the_masks_of_the_nifti_files(cases):
    from lits_fastai.inference import predict_files
    tmp, mf = cases
    p = run('lits-predict', mf, tmp/'dicom', tmp/'from_dicom', '--uncertainty', preexec_fn=lambda: os.umask(0o002))
    assert 'wrote 2 mask(s)' in p.stdout, p.stdout
    for i in (0, 1):
        a, aa = canonical(tmp/'from_nifti'/f'segmentation-{i}.nii')
        b, ba = canonical(tmp/'from_dicom'/f'study_series{i+1}.nii.gz')
        assert (a == 1).any() and np.array_equal(a, b) and np.allclose(aa, ba, atol=1e-6)   # same voxels on the same world grid
        u, ua = canonical(tmp/'from_dicom'/f'study_series{i+1}_uncertainty.nii.gz')
        assert u.shape == b.shape and np.allclose(ua, ba) and 0 <= u.min() < u.max() <= 1
    df = pd.read_csv(tmp/'from_dicom'/'summary.csv')
    assert len(df) == 2 and df['doubt'].between(0, 1).all() and (df['liver_ml'] > 0).all() and (df['largest_lesion_mm'] >= 0).all()
    assert df['doubt'].is_monotonic_decreasing                                          # the most doubtful scan first
    for f in (tmp/'from_dicom').iterdir(): assert f.stat().st_mode & 0o777 == 0o664, f  # as `open` makes them under umask 002
    again = predict_files(mf, tmp/'dicom', tmp/'from_dicom', pbar=False)
    assert (again[0], len(again.skipped)) == ([], 2) and len(pd.read_csv(again.summary)) == 2
    t = (tmp/'from_dicom'/'study_series1.nii.gz').stat().st_mtime_ns
    assert len(predict_files(mf, tmp/'dicom', tmp/'from_dicom', overwrite=True, workers=0, pbar=False)[0]) == 2
    assert (tmp/'from_dicom'/'study_series1.nii.gz').stat().st_mtime_ns > t

def _copy_series(src, dst, change):
    "Copy series 1 of `src` to `dst` as a new series, changing each slice with `change(ds)` (True: leave the slice out)"
    dst.mkdir(parents=True)
    uid = pydicom.uid.generate_uid()
    for f in src.iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        if ds.SeriesNumber == 1 and not change(ds): ds.save_as(dst/f.name)

def _move(ds, d): ds.ImagePositionPatient = [float(a) + b for a, b in zip(ds.ImagePositionPatient, d)]

REASONS = {'mr': 'not a CT series', 'gap': 'missing slices', 'uneven': 'unevenly spaced', 'tilt': 'gantry tilt',
           'orientations': 'more than one orientation'}
CHANGES = {'mr': lambda ds: setattr(ds, 'Modality', 'MR'), 'gap': lambda ds: ds.InstanceNumber == 6,
           'uneven': lambda ds: _move(ds, (0, 0, 0.3*ds.InstanceNumber**2)), 'tilt': lambda ds: _move(ds, (0, 0.4*ds.InstanceNumber, 0)),
           'orientations': lambda ds: ds.InstanceNumber == 3 and setattr(ds, 'ImageOrientationPatient', [0, 1, 0, 1, 0, 0])}

def test_bad_series_are_named_in_one_line_and_the_good_ones_give_a_dicom_seg_equal_to_the_nifti_mask(cases):
    tmp, mf = cases
    bad = tmp/'bad'
    shutil.copytree(tmp/'dicom', bad/'good')
    for name, change in CHANGES.items(): _copy_series(tmp/'dicom'/'study', bad/name, change)
    p = run('lits-predict', mf, bad, tmp/'seg', '--format', 'seg', ok=False)
    assert 'Traceback' not in p.stderr and 'wrote 2 mask(s)' in p.stdout, p.stderr
    lines = p.stderr.strip().splitlines()
    for name, why in REASONS.items():
        hit = [l for l in lines if l.startswith(str(bad/name) + ':')]
        assert len(hit) == 1 and why in hit[0], (name, lines)
    assert len(lines) == len(REASONS), lines
    for s in find_series(bad/'good'):
        img, headers = read_series(s)
        fn = tmp/'seg'/f'good_study_series{s.number}.dcm'
        ds = pydicom.dcmread(fn)
        assert ds.Modality == 'SEG' and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == s.uid
        assert fn.stat().st_mode & 0o777 == 0o666 & ~UMASK, oct(fn.stat().st_mode)        # not mkstemp's private 0600
        assert [o.SegmentedPropertyTypeCodeSequence[0].CodeValue for o in ds.SegmentSequence] == ['10200004', '108369006']
        a, aa = canonical(tmp/'from_dicom'/f'study_series{s.number}.nii.gz')
        assert np.array_equal(to_canonical(read_seg(fn, headers), geometry(img)), a)
