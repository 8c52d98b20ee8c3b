#!/usr/bin/env python3
"""The package's layers: check that every import goes down (to a lower layer, or to a module left of it in its own row)
and, with --draw, draw them to nbs/images/layers.png (the picture in README.md's Architecture section).
Usage: python .ci/layers.py [--draw]"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from check_shape import graph_of

LAYERS = [  # (layer, its modules in the order they may import each other), bottom first
    ('foundation', ['core']),
    ('data in', ['synth', 'dicom', 'discover', 'recipes', 'transforms', 'cache', 'split']),
    ('tensors and scores', ['models', 'losses', 'metrics', 'tracking', 'evaluate']),
    ('loaders and pictures', ['data', 'data3d', 'png', 'plots', 'postprocess']),
    ('the model', ['plan', 'modelfile', 'learner']),
    ('using a model', ['inference', 'report', 'export']),
    ('orchestration', ['train', 'compare', 'demo']),
    ('command lines', ['cli']),
]

def rank(mod:str) -> tuple:
    top = mod.split('.')[0] if mod.startswith('models.') else mod
    for i, (_, ms) in enumerate(LAYERS):
        if top in ms: return i, ms.index(top)
    raise KeyError(f"{mod} is in no layer of .ci/layers.py")

def upward(graph:dict) -> list:
    "Imports that go up or sideways to the right: (module, what it imports)"
    return [(m, d) for m, ds in graph.items() if m not in ('', 'lits_fastai') for d in ds
            if not d.startswith(m.split('.')[0] + '.') and not m.startswith(d + '.') and rank(d) >= rank(m)]

def draw(fn):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch
    fig, ax = plt.subplots(figsize=(10, 5.6))
    ax.set_xlim(0, 10); ax.set_ylim(-0.3, len(LAYERS)); ax.axis('off')
    cmap = plt.get_cmap('Blues')
    for i, (name, ms) in enumerate(LAYERS):
        ax.add_patch(FancyBboxPatch((0.05, i + 0.08), 9.9, 0.8, boxstyle='round,pad=0.02', fc=cmap(0.15 + 0.08*i), ec='0.4'))
        ax.text(0.25, i + 0.48, name, va='center', ha='left', fontsize=10, style='italic', color='0.2')
        w = 7.4 / len(ms)
        for j, m in enumerate(ms):
            ax.add_patch(FancyBboxPatch((2.45 + j*w + 0.06, i + 0.2), w - 0.12, 0.56, boxstyle='round,pad=0.02', fc='white', ec='0.3'))
            ax.text(2.45 + j*w + w/2, i + 0.48, m, va='center', ha='center', fontsize=10, family='monospace')
    ax.annotate('', xy=(0.12, 0.1), xytext=(0.12, len(LAYERS) - 0.1), arrowprops=dict(arrowstyle='->', color='0.3', lw=1.5))
    ax.set_title('lits_fastai: each module imports only the layers below it (and modules left of it in its row)', fontsize=10)
    fig.tight_layout(); fig.savefig(fn, dpi=110); plt.close(fig)
    return fn

if __name__ == '__main__':
    bad = upward(graph_of())
    for m, d in bad: print(f"{m} imports {d}: upwards", file=sys.stderr)
    if '--draw' in sys.argv: print(draw(Path(__file__).resolve().parents[1]/'nbs'/'images'/'layers.png'))
    print('layers: every import goes down' if not bad else f"layers: {len(bad)} import(s) go up")
    sys.exit(1 if bad else 0)
