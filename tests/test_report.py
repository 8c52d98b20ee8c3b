"""The HTML report of `lits_fastai.report.write_report` in a real browser (headless Chromium, as tests/test_site.py).

A tiny synthetic comparison (two made-up systems, scored by `evaluate_folder`) is written as one report; opened from
its file it must load without a console error and without asking any host for anything, every picture must decode,
and a click on a column header must reorder the rows of the table."""
import os
from pathlib import Path
import numpy as np, pandas as pd, nibabel as nib, pytest
from conftest import chromium
from scipy import ndimage


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    from lits_fastai.synth import make_synth
    from lits_fastai.evaluate import evaluate_folder, paired_test
    from lits_fastai.report import write_report
    tmp = tmp_path_factory.mktemp('report')
    make_synth(tmp/'data', n_cases=4, shape=(64, 64, 12), seed=0)
    gts = sorted((tmp/'data'/'segmentations').glob('*.nii'))
    def shrink(y): o = ndimage.binary_erosion(y>0).astype(np.uint8); o[ndimage.binary_erosion(y==2)] = 2; return o
    def grow(y): o = ndimage.binary_dilation(y>0, iterations=2).astype(np.uint8); o[ndimage.binary_dilation(y==2)] = 2; return o
    for name,f in (('shrink', shrink), ('grow', grow)):
        (tmp/name).mkdir()
        for g in gts:
            img = nib.load(g); nib.save(nib.Nifti1Image(f(np.asarray(img.dataobj)), img.affine, img.header), tmp/name/g.name)
    pcs = {n: evaluate_folder(tmp/n, tmp/'data'/'segmentations', n_boot=50, verbose=False)[0] for n in ('shrink', 'grow')}
    ep = np.arange(4)
    pd.DataFrame(dict(epoch=ep, train_loss=1/(ep+1), valid_loss=1.2/(ep+1), liver_dice=.9-.5/(ep+2), time='00:01')).to_csv(tmp/'h.csv', index=False)
    table = pd.DataFrame(dict(system=['shrink', 'grow', 'third'], liver_dice_mean=[.7, .9, .8], tumor_dice_mean=[.5, np.nan, .6]))
    vols = {f.stem.split('-')[1]: f for f in (tmp/'data').glob('volume_pt*/*.nii')}
    return write_report(tmp/'report.html', table, pcs, paired_test(pcs['shrink'], pcs['grow']).assign(a='shrink', b='grow'), vols,
                        {'shrink': [tmp/'h.csv', tmp/'h.csv'], 'grow': tmp/'h.csv'}, {'train_cases': [], 'valid_cases': ['0', '1', '2', '3']},
                        {'shrink': {'lr': 1e-3}, 'grow': {'lr': 1e-4}}, title='a tiny comparison')

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    d = chromium(tmp_path_factory.mktemp('chromium'))
    yield d
    d.quit()

WAIT_IMAGES = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.images);
Promise.all(imgs.map(i => i.decode().then(() => true, () => false))).then(ok => done({
  imgs: imgs.map((i, k) => [i.src.slice(0, 30), ok[k], i.naturalWidth, i.naturalHeight]),
  resources: performance.getEntriesByType('resource').map(r => r.name),
  nav: performance.getEntriesByType('navigation').map(r => r.name)}));
"""

def _column(browser, table, col):
    return browser.execute_script(
        "return Array.from(arguments[0].tBodies[0].rows).map(r => r.cells[arguments[1]].textContent)", table, col)

def _open_offline(browser, fn) -> list:
    "Open the report `fn`: every picture must decode and nothing beyond the file be requested; returns the pictures"
    browser.get(Path(fn).resolve().as_uri())
    assert browser.execute_script('return document.readyState') == 'complete'
    browser.set_script_timeout(30)
    info = browser.execute_async_script(WAIT_IMAGES)
    bad = [i for i in info['imgs'] if not (i[0].startswith('data:image/') and i[1] and i[2] > 0 and i[3] > 0)]
    assert not bad, f"pictures that do not decode: {bad}"
    urls = info['resources'] + info['nav']
    assert all(u.startswith(('data:', 'file:')) for u in urls), f"requests beyond the file: {urls}"
    return info['imgs']

def test_report_in_chromium(report, browser):
    from selenium.webdriver.common.by import By
    imgs = _open_offline(browser, report)
    assert browser.title == 'a tiny comparison'
    assert len(imgs) == 1 + 6 + 2, imgs                             # Dice plot, best/median/worst of 2 systems, 2 curves
    # the summary table: a click on a header sorts by it, a second click reverses, NaN stays last
    table = browser.find_element(By.CSS_SELECTOR, '#summary table')
    heads = table.find_elements(By.TAG_NAME, 'th')
    names = [h.text for h in heads]
    assert _column(browser, table, 0) == ['shrink', 'grow', 'third']
    heads[names.index('liver_dice_mean')].click()
    assert _column(browser, table, 0) == ['shrink', 'third', 'grow']
    heads[names.index('liver_dice_mean')].click()
    assert _column(browser, table, 0) == ['grow', 'third', 'shrink']
    heads[names.index('tumor_dice_mean')].click()
    assert _column(browser, table, 0) == ['shrink', 'third', 'grow']   # 0.5, 0.6, then the dash
    heads[names.index('system')].click()
    assert _column(browser, table, 0) == ['grow', 'shrink', 'third']
    # the table of every case sorts too (it sits in a closed <details>: open it first)
    browser.find_element(By.CSS_SELECTOR, '#dice details summary').click()
    cases = browser.find_element(By.CSS_SELECTOR, '#dice details table')
    h = cases.find_elements(By.TAG_NAME, 'th')
    col = [o.text for o in h].index('grow liver')
    h[col].click()
    v = [float(o) for o in _column(browser, cases, col)]
    assert v == sorted(v) and len(v) == 4
    # the papers' metrics: one row per system and class; the eroded system predicts nothing false, the dilated misses nothing
    papers = browser.find_element(By.CSS_SELECTOR, '#papers table')
    names = [h.text for h in papers.find_elements(By.TAG_NAME, 'th')]
    assert _column(browser, papers, 0) == ['shrink', 'shrink', 'grow', 'grow']
    assert {'slice Dice', 'slice Dice SD', 'precision', 'recall', 'specificity', 'F1', 'mIoU', 'foreground acc', 'NSD'} <= set(names)
    assert _column(browser, papers, names.index('precision'))[:2] == ['1.000', '1.000']
    assert _column(browser, papers, names.index('recall'))[2:] == ['1.000', '1.000']
    errors = [e for e in browser.get_log('browser') if e['level'] == 'SEVERE']
    assert not errors, f"console errors: {errors}"

def test_report_of_a_smoke_lits_compare_in_chromium(browser, tmp_path_factory):
    "The report.html a smoke `lits-compare --folds 2` writes: it opens offline without console errors, its pictures decode, its columns sort"
    import subprocess, sys
    from selenium.webdriver.common.by import By
    tmp = tmp_path_factory.mktemp('smoke_compare')
    bin_ = Path(sys.executable).parent
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
    subprocess.run([str(bin_/'lits-synth'), str(tmp/'data'), '--n-cases', '6', '--size', '48x48x12', '--seed', '2'], check=True,
                   capture_output=True, env=env)
    p = subprocess.run([str(bin_/'lits-compare'), str(tmp/'data'), '--archs', 'smp:Linknet:mobilenet_v2,smp:FPN:mobilenet_v2', '--folds', '2',
                        '--epochs', '1', '--size', '32', '--bs', '4', '--pretrained', 'no', '--n-boot', '50', '--out', str(tmp/'cmp'),
                        '--cache', str(tmp/'cache')], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    imgs = _open_offline(browser, tmp/'cmp'/'report.html')
    assert len(imgs) >= 1 + 6 + 2, imgs                              # Dice plot, best/median/worst of 2 systems, their curves
    table = browser.find_element(By.CSS_SELECTOR, '#summary table')
    heads = table.find_elements(By.TAG_NAME, 'th')
    col = [h.text for h in heads].index('liver_dice_mean')
    for k in range(2):                                                 # ascending, then descending
        heads[col].click()
        v = [float(o) for o in _column(browser, table, col)]
        assert v == sorted(v, reverse=bool(k)) and len(v) == 2
    assert browser.find_elements(By.CSS_SELECTOR, '#pairwise table'), 'no paired differences'
    papers = browser.find_element(By.CSS_SELECTOR, '#papers table')                # the papers' metrics of the out-of-fold cases
    assert len(_column(browser, papers, 0)) == 4                                    # 2 systems x (liver, tumour)
    errors = [e for e in browser.get_log('browser') if e['level'] == 'SEVERE']
    assert not errors, f"console errors: {errors}"
