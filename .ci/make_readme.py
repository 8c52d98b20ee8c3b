#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb without Quarto (`--check` exits 1 when README.md is out of date).

Markdown cells are copied (relative links and pictures pointed into nbs/), visible code cells become ```python blocks, their text outputs ``` blocks;
cells whose first lines carry `#| hide` are left out, and `#|` directives are removed."""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def _directives(src):
    return [l.strip()[2:].strip() for l in src.splitlines() if l.strip().startswith('#|')]

def _from_root(md):
    "Relative links and pictures of nbs/index.ipynb (relative to nbs/) made relative to the repository root"
    return re.sub(r'(\]\()(?![a-z]+:|#|/)', r'\1nbs/', md)

def render(nb_path=root/'nbs'/'index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        ds = _directives(src)
        if any(d.startswith(('hide', 'exporti', 'include: false')) for d in ds): continue
        body = '\n'.join(l for l in src.splitlines() if not l.strip().startswith('#|')).strip('\n')
        if c['cell_type'] == 'markdown': parts.append(_from_root(body))
        elif c['cell_type'] == 'code' and body:
            if any(d.startswith('echo: false') for d in ds): body = ''
            if body: parts.append(f"```python\n{body}\n```")
            for o in c.get('outputs', []):
                txt = o.get('text') or o.get('data', {}).get('text/plain')
                if txt and not o.get('data', {}).get('image/png'): parts.append("```\n" + ''.join(txt).rstrip('\n') + "\n```")
    return '\n\n'.join(p for p in parts if p.strip()) + '\n'

if __name__ == '__main__':
    out = render()
    readme = root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != out:
            print("README.md is out of date with nbs/index.ipynb: run `python .ci/make_readme.py`", file=sys.stderr)
            sys.exit(1)
        print("README.md is in sync with nbs/index.ipynb")
    else:
        readme.write_text(out, encoding='utf-8')
        print(f"wrote {readme}")
