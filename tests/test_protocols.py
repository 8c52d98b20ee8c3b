"The papers' own splits beside the patient-level one: `split.paper_split` and `lits-compare --protocol paper`"
import json
import pandas as pd
import pytest
from conftest import run
from lits_fastai.cache import load_manifest
from lits_fastai.split import Split, paper_split, curate_cases, compare_folds, split_cases, PAPER_SPLITS
from lits_fastai.cli import compare_flags
from lits_fastai.compare import Scale, RunOptions


def test_random_slice_split_leaks_and_says_so(synth_cache):
    "LT-Net's thesis split puts slices of one patient in training and test, and its leakage report counts them"
    g = paper_split(synth_cache, 'ltnet')
    man = load_manifest(synth_cache)
    test = g['test_slices'].merge(man, on=['case', 'slice'])
    train = man.merge(g['test_slices'], on=['case', 'slice'], how='left', indicator=True).query('_merge=="left_only"')
    both = set(test['case']) & set(train['case'])
    assert both and g['leakage']['leaks'] and g['leakage']['leaking_slices'] > 0
    assert g['leakage']['leaking_slices'] == test['case'].isin(set(train['case'])).sum()
    assert sorted(g['leakage']['cases_both_sides']) == sorted(both)


def test_curated_split_obeys_its_rules(synth_cache):
    "The hybrid paper's curation: tumour present, clean masks, no empty test slices, at most 11 cases split 8/1/2 by patient"
    man = load_manifest(synth_cache)
    g = paper_split(man, 'hybrid')
    cur = curate_cases(man).set_index('case')
    used = g['train'] + g['valid'] + g['test']
    assert len(used) == len(set(used)) <= 11 and not g['leakage']['leaks']
    assert all(cur.loc[c, 'tumour'] and cur.loc[c, 'clean'] for c in used)
    assert g['valid'] and g['test'] and len(g['train']) >= len(g['test']) >= len(g['valid'])
    s = g['test_slices'].merge(man, on=['case', 'slice'])
    assert len(s) and ((s['liver_px'] + s['tumor_px']) > 0).all() and set(s['case']) == set(g['test'])
    # a case with a tumour outside the liver and a gap in its annotation is left out; so is one without tumour
    kept = sorted(cur.index[cur['kept']])
    bad = man.copy()
    c0 = c1 = kept[0]
    z0 = bad[(bad['case'] == c0) & (bad['liver_px'] > 0)].index[0]
    bad.loc[z0, ['liver_px', 'tumor_px']] = [0, 5]
    z1 = bad[(bad['case'] == c1) & (bad['liver_px'] > 0)].index
    bad.loc[z1[len(z1) // 2], ['liver_px', 'tumor_px']] = [0, 0]
    g2 = paper_split(bad, 'hybrid')
    assert c0 not in g2['train'] + g2['valid'] + g2['test'] and c0 in g2['held_out']
    reason = curate_cases(bad).set_index('case').loc[c0, 'reason']
    assert 'tumour without liver' in reason and 'unlabelled slice' in reason, reason
    assert not curate_cases(man.assign(tumor_px=0))['kept'].any()


def test_honest_default_unchanged(synth_cache):
    "The default split is the patient-level one it was: the new fields change nothing unless asked for"
    sp, sc, op = compare_flags()
    assert (sp, sc, op) == (Split(), Scale(), RunOptions())
    assert sp.kwargs() == dict(valid_pct=None, valid_cases=None, fold=None, n_folds=None, max_cases=None, seed=42, test_cases=None)
    assert sp.folds(synth_cache) == compare_folds(synth_cache)
    assert Split(n_folds=3).folds(synth_cache) == compare_folds(synth_cache, n_folds=3)
    assert sp.cases(synth_cache) == split_cases(synth_cache)
    for n in PAPER_SPLITS:
        if n != 'ltnet': assert not paper_split(synth_cache, n)['leakage']['leaks'], n


def test_lits_compare_protocol_paper(synth_cache, tmp_path):
    "lits-compare --protocol paper: the patient-level table as before, and the protocol table that marks LT-Net's split as leaking"
    out = tmp_path/'cmp'
    args = ['--archs', 'ltnet', '--epochs', 1, '--size', 32, '--bs', 8, '--light', '--pretrained', 'no', '--n-boot', 50, '--out', out]
    p = run('lits-compare', synth_cache, *args, '--protocol', 'paper', timeout=900)
    pt = pd.read_csv(out/'protocols.csv')
    assert pt['system'].tolist() == ['ltnet'] and bool(pt.loc[0, 'leaks']) and pt.loc[0, 'leaking_slices'] > 0, p.stdout
    md = (out/'compare.md').read_text()
    assert '**yes: leaks**' in md and 'leakage:' in md
    assert json.loads((out/'protocols'/'ltnet'/'result.json').read_text())['level'] == 'slices'
    p = run('lits-compare', synth_cache, '--archs', 'ltnet', '--protocol', 'slices', '--out', out, ok=False)
    assert p.stderr.strip().splitlines()[-1] == "lits-compare: unknown protocol 'slices': use 'patient' or 'paper'"
