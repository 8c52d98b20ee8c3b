#!/usr/bin/env python
"""Build the documentation site offline, without Quarto: `python .ci/build_site.py [--out _site]`.

1. nbdev's notebook processing, as `nbdev_proc_nbs` does it, into `_proc/` (cached: only changed notebooks are
   processed again): front matter, `show_doc` for every exported name, links to the API, hidden cells removed.
   One difference: to fill in the `show_doc` output nbdev runs the exported cells, the `show_doc` cells and every
   cell that contains an import; here a cell that mixes imports with other code is not run (a warning names it),
   so an example that needs earlier cells cannot break or slow down the docs build.
2. The processed notebooks are turned into plain Jupyter notebooks that mkdocs-jupyter renders: the title and
   description become the first cell, Quarto's `#|` options (`echo: false`, `output: false`, `include: false`) are
   applied, callouts (`::: {.callout-note}`) become admonitions, Pandoc attributes (`[source](url){target=...}`)
   become HTML, and TeX (`$...$`, `$$...$$`) becomes MathML, which the browser draws without MathJax.
3. mkdocs with the material theme and mkdocs-jupyter renders them into `--out`: navigation in notebook order
   (index, the numbered API notebooks, then each folder such as tutorials/), the built-in search, outputs and
   images. Nothing is loaded from the network at build or view time: no web fonts, no CDN scripts (the hooks at
   the end of this file remove MathJax, RequireJS and Mermaid loaders), and links to the project's doc host are
   made relative. Page names are nbdev's (`00_core.ipynb` -> `core.html`).

View the result with `python -m http.server -d _site` (search needs http, not file://).
"""
import argparse, json, os, re, shutil, sys, tempfile, time, hashlib, html
from pathlib import Path

HERE = Path(__file__).resolve()
ASSETS = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp'}
CALLOUTS = {'note': ('note', 'Note'), 'tip': ('tip', 'Tip'), 'warning': ('warning', 'Warning'),
            'important': ('info', 'Important'), 'caution': ('danger', 'Caution')}

# ---------------------------------------------------------------------------------------------------------------
# 1. nbdev processing

_current = None  # the notebook being processed, for warnings

def _do_eval(cell):
    "Which cells `exec_show_docs` runs: exported cells, `show_doc` cells and cells made of imports only"
    import ast
    from nbdev.processors import cell_lang, _show_docs
    if cell_lang(cell) != 'python' or not cell.source or cell.cell_type != 'code': return
    if 'nbdev_export' + '()' in cell.source: return
    trees = cell.parsed_()
    if not trees or cell.directives_.get('eval:', [''])[0].lower() == 'false': return
    if cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}: return True
    if _show_docs(trees): return True
    if all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees): return True
    if any(isinstance(n, (ast.Import, ast.ImportFrom)) for t in trees for n in ast.walk(t)):
        first = next((l for l in cell.source.splitlines() if l.strip() and not l.startswith('#|')), '')[:60]
        print(f"warning: {os.path.relpath(_current)}: the cell starting `{first}` mixes imports with other code; "
              "not run for the docs (give the imports a cell of their own)", file=sys.stderr)

def _proc_one(task):
    "Process one notebook as `nbdev_proc_nbs` does (in a worker process); returns an error line or None"
    import nbdev.processors, nbdev.serve_drv, warnings
    nbdev.processors._do_eval = _do_eval
    warnings.filterwarnings('ignore', message='Found cells containing imports')
    global _current
    src, dst, procs = task
    _current = src
    try: nbdev.serve_drv.main(task)
    except Exception as e:
        if dst.exists(): dst.unlink()
        cause = e.__cause__ or e.__context__
        return f"{src}: {str(e).splitlines()[0]} {type(cause).__name__ + ': ' + str(cause) if cause else ''}".strip()

def proc_nbs(cfg, force=False, n_workers=1):
    "nbdev's `proc_nbs` with `_do_eval` above; every error is collected, not only the first"
    from fastcore.parallel import parallel
    from nbdev.doclinks import nbglob
    import nbdev.serve
    from nbdev.serve import _proc_file
    cache, path = cfg.config_path/'_proc', Path(cfg.nbs_path)
    files = nbglob(path, func=Path, file_glob='', file_re='')
    chk = max(cfg.config_file.stat().st_mtime, Path(nbdev.serve.__file__).stat().st_mtime, HERE.stat().st_mtime)
    cache.mkdir(parents=True, exist_ok=True)
    if force or cache.stat().st_mtime < chk: shutil.rmtree(cache); cache.mkdir()
    tasks = files.map(_proc_file, mtime=cache.stat().st_mtime, cache=cache, path=path).filter()
    sys.path.insert(0, str(HERE.parent))  # the workers import this file as a module
    import build_site
    errs = [o for o in parallel(build_site._proc_one, tasks, n_workers=n_workers, pause=0.01, method='spawn') if o]
    if not errs: cache.touch()
    return cache, len(tasks), errs

# ---------------------------------------------------------------------------------------------------------------
# 2. from Quarto-flavoured notebooks to plain ones

def nb_title(nb_path):
    "The first `# title` of a notebook's markdown, or its file name"
    for c in json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']:
        if c['cell_type'] != 'markdown': continue
        m = re.search(r'^#\s+(\S.*?)\s*$', ''.join(c['source']), re.M)
        if m: return m.group(1)
    return Path(nb_path).stem

def page_name(rel):
    "nbdev's page name of a notebook (`tutorials/01_quick.ipynb` -> `tutorials/quick.html`)"
    rel = Path(rel)
    return rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())).with_suffix('.html').as_posix()

_attr_re = re.compile(r'''([\w-]+)=("[^"]*"|'[^']*'|[^\s"']+)|\.([\w-]+)|#([\w:.-]+)''')

def _attrs(s):
    "Pandoc attributes (`{#id .cls key=v}`) as an HTML attribute string"
    kv, cls = {}, []
    for k, v, c, i in _attr_re.findall(s):
        if k: kv[k] = v[1:-1] if v[:1] in '"\'' else v
        elif c: cls.append(c)
        elif i: kv['id'] = i
    if cls: kv['class'] = ' '.join(cls)
    for k in ('width', 'height'):  # Pandoc sizes (50%, 3in) are CSS, not HTML
        if k in kv and not kv[k].isdigit(): kv['style'] = f"{k}:{kv.pop(k)};" + kv.get('style', '')
    return ''.join(f' {k}="{html.escape(v)}"' for k, v in kv.items())

def _tex(tex, display):
    from latex2mathml.converter import convert
    try: return convert(tex.strip(), display='block' if display else 'inline')
    except Exception as e:
        print(f"warning: TeX not converted ({type(e).__name__}): {tex.strip()[:60]}", file=sys.stderr)
        return f"<code>{html.escape(tex)}</code>"

_code_re = re.compile(r'(^[ \t]*(```|~~~).*?^[ \t]*\2[ \t]*$|``[^\n]+?``|`[^`\n]+`)', re.M | re.S)
_dmath_re = re.compile(r'\$\$(.+?)\$\$', re.S)
_imath_re = re.compile(r'(?<![\\$\w])\$(?=[^\s$])((?:[^$\n\\]|\\.|\n(?![ \t]*\n))+?)(?<=\S)\$(?![\d$])')
_link_re = re.compile(r'(!?)\[([^\]\n]*)\]\(([^)\s]+)(?:\s+"([^"]*)")?\)\{([^}\n]*)\}')
_span_re = re.compile(r'(?<![\]!])\[([^\]\n]+)\]\{([^}\n]*)\}')
_nested_link_re = re.compile(r'\[\[(`[^`\n]+`)\]\([^)\s]+\)\]\(([^)\s]+)\)')  # nbdev links names inside links too
_code_link_re = re.compile(r'\[(`[^`\n]+`)\]\([^)\s]+\)')  # nbdev links names in show_doc's code blocks too
_hattr_re = re.compile(r'^(#{1,6}[ \t].*?)[ \t]*\{[^}\n]*\}[ \t]*$', re.M)

HTML_TAGS = set('''a abbr address area article aside audio b bdi bdo blockquote br button caption center cite code col colgroup
dd del details dfn div dl dt em embed figcaption figure font footer h1 h2 h3 h4 h5 h6 header hr i iframe img input ins kbd
label legend li link main mark math mi mn mo mrow ms mspace msqrt mroot mstyle msub msup msubsup mtable mtd mtext mtr munder
mover munderover mfrac mpadded mphantom menclose semantics annotation nav ol p picture pre q s samp script section small source
span strike strong style sub summary sup svg path g table tbody td tfoot th thead time tr u ul var video wbr'''.split())
_tag_re = re.compile(r'<(/?)([A-Za-z][\w-]*)([^<>\n]*)>')

def _esc_tag(m):
    "`<file>` in prose is text, not an HTML element the browser would hide"
    if m.group(2).lower() in HTML_TAGS or m.group(3)[:1] in (':', '@') or '@' in m.group(2): return m.group(0)
    return html.escape(m.group(0), quote=False)

def _inline(s):
    "Pandoc/Quarto inline syntax of markdown text outside code"
    s = _tag_re.sub(_esc_tag, s)
    s = _dmath_re.sub(lambda m: _tex(m.group(1), True), s)
    s = _imath_re.sub(lambda m: _tex(m.group(1), False), s)
    def link(m):
        img, text, url, title, at = m.groups()
        t = f' title="{html.escape(title)}"' if title else ''
        if img: return f'<img src="{html.escape(url)}" alt="{html.escape(text)}"{t}{_attrs(at)}>'
        return f'<a href="{html.escape(url)}"{t}{_attrs(at)}>{text}</a>'
    s = _link_re.sub(link, s)
    s = _span_re.sub(lambda m: f'<span{_attrs(m.group(2))}>{m.group(1)}</span>', s)
    return _hattr_re.sub(r'\1', s)

def _divs(md):
    "Quarto fenced divs: callouts become material admonitions, other divs are unwrapped"
    out, stack, fence = [], [], None
    for line in md.split('\n'):
        f = re.match(r'^[ \t]*(```|~~~)', line)
        if f and (fence is None or f.group(1) == fence): fence = None if fence else f.group(1)
        m = None if fence or f else re.match(r'^[ \t]*:::+[ \t]*(\{([^}]*)\}|[\w-]+)?[ \t]*$', line)
        if not m: out.append(line); continue
        if m.group(1) is None and stack:  # closing fence
            if stack.pop(): out += ['', '</div>', '']
            continue
        attrs = m.group(2) or ''
        c = re.search(r'\.callout-(\w+)', attrs)
        stack.append(bool(c))
        if c:
            kind, title = CALLOUTS.get(c.group(1), ('note', c.group(1).title()))
            t = re.search(r'title="([^"]*)"', attrs)
            out += ['', f'<div class="admonition {kind}">', f'<p class="admonition-title">{html.escape(t.group(1) if t else title)}</p>', '']
    return '\n'.join(out)

def convert_md(md):
    "Quarto-flavoured markdown to the CommonMark + HTML that nbconvert renders"
    md = _nested_link_re.sub(r'[\1](\2)', _divs(md))
    parts = _code_re.split(md)
    res, i = [], 0
    while i < len(parts):  # split() gives text, code, fence-marker, text, ...
        res.append(_inline(parts[i]))
        if i + 1 < len(parts): res.append(_code_link_re.sub(r'\1', parts[i + 1]) if parts[i + 2] else parts[i + 1])
        i += 3
    return ''.join(res)

def _src(c): return ''.join(c['source']) if isinstance(c.get('source'), list) else (c.get('source') or '')

def terminal_text(t:str) -> str:
    "Text as a terminal shows it: each carriage return starts the line over, writing over what it passes (progress bars)"
    out = []
    for line in t.split('\n'):
        buf = ''
        for seg in line.split('\r'): buf = seg + buf[len(seg):]
        out.append(buf.rstrip() if '\r' in line else buf)
    return '\n'.join(out)

def convert_nb(nb, title):
    "A processed notebook (`_proc/`) as a plain notebook for mkdocs-jupyter"
    import yaml
    fm, cells = {}, []
    for c in nb['cells']:
        s = _src(c)
        if c['cell_type'] == 'raw':
            m = re.match(r'^---\s*\n(.*?)\n---\s*$', s.strip() + '\n', re.S)
            if m and not fm: fm = yaml.safe_load(m.group(1)) or {}
            continue
        if c['cell_type'] == 'markdown':
            if s.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED!'): continue
            c['source'] = convert_md(s)
        elif c['cell_type'] == 'code':
            lines = s.split('\n')
            ds = {}
            while lines and re.match(r'^\s*#\|', lines[0]):
                d = lines.pop(0).strip()[2:].strip()
                k, _, v = d.partition(':')
                ds[k.strip()] = v.strip().lower()
            if ds.get('include') == 'false': continue
            c['source'] = '\n'.join(lines).strip('\n')
            if ds.get('output') == 'false': c['outputs'] = []
            tags = c.setdefault('metadata', {}).setdefault('tags', [])
            if ds.get('echo') == 'false' or not c['source']: tags.append('hide-input')
            for o in c.get('outputs', []):
                if o.get('output_type') == 'stream':        # a progress bar stored by a console run: its final state only
                    o['text'] = terminal_text(''.join(o['text']) if isinstance(o['text'], list) else o['text'])
                md = o.get('data', {}).get('text/markdown')
                if md is not None:
                    o['data']['text/markdown'] = convert_md(''.join(md) if isinstance(md, list) else md)
                    o['data'].pop('text/plain', None)
            if not c['source'] and not c.get('outputs'): continue
        cells.append(c)
    head = f"# {fm.get('title') or title}"
    if fm.get('description'): head += f"\n\n> {fm['description']}"
    nb['cells'] = [{'cell_type': 'markdown', 'metadata': {}, 'source': convert_md(head)}] + cells
    nb['metadata'].setdefault('kernelspec', {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'})
    nb['metadata'].setdefault('language_info', {'name': 'python'})
    return nb, fm

# ---------------------------------------------------------------------------------------------------------------
# 3. mkdocs

def notebooks(nbs):
    "Notebooks in reading order: index, the top-level notebooks, then each folder's (sorted), skipping `_` and `.`"
    def ok(p): return not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts)
    nbl = sorted((p for p in nbs.rglob('*.ipynb') if ok(p)), key=lambda p: p.relative_to(nbs).as_posix())
    top = [p for p in nbl if p.parent == nbs]
    return sorted(top, key=lambda p: p.name != 'index.ipynb') + [p for p in nbl if p.parent != nbs]

def site_config(cfg, nav, stage):
    doc_url = cfg.get('doc_host', '').rstrip('/') + '/' + cfg.get('doc_baseurl', '').strip('/') + '/'
    return {
        'site_name': cfg.get('title', cfg.get('lib_name')), 'site_description': cfg.get('description', ''),
        'docs_dir': str(stage/'docs'), 'use_directory_urls': False, 'nav': nav,
        'theme': {'name': 'material', 'font': False, 'language': 'en',
                  'features': ['navigation.sections', 'navigation.top', 'search.highlight', 'toc.follow'],
                  'palette': {'primary': 'indigo', 'accent': 'indigo'}},
        'plugins': ['search', {'mkdocs-jupyter': {
            'include': ['*.ipynb'], 'execute': False, 'include_requirejs': False, 'ignore_h1_titles': True,
            'remove_tag_config': {'remove_input_tags': ['hide-input']}, 'toc_depth': 4, 'no_prompt': True,
            'cache_dir': str(stage/'cache')}}],
        'hooks': [str(HERE)],
        'extra': {'lits_doc_url': doc_url, 'generator': False},
        'extra_css': ['assets/site.css'],
    }

SITE_CSS = """
.jupyter-wrapper .jp-OutputArea-output.jp-RenderedMarkdown hr { margin: 1.5em 0 0.5em; }
.jupyter-wrapper math[display="block"] { margin: 1em 0; }
.jupyter-wrapper .admonition { font-size: 0.9em; }
"""

def build(out, force=False, n_workers=1, verbose=False):
    from nbdev.config import get_config
    from filelock import FileLock
    import yaml
    t0 = time.time()
    cfg = get_config()
    root, nbs = Path(cfg.config_path), Path(cfg.nbs_path)
    out = Path(out).resolve()
    if out == root or root.is_relative_to(out) or out == nbs or (out/'.git').exists() or (out/'settings.ini').exists():
        sys.exit(f"build_site: refusing to write the site into {out} (it would be emptied)")
    lock = Path(tempfile.gettempdir())/f"lits_site_{hashlib.md5(str(root).encode()).hexdigest()[:8]}.lock"
    with FileLock(str(lock)):
        nbl = notebooks(nbs)  # the pages: what exists now (others may add notebooks while this runs)
        cache, n, errs = proc_nbs(cfg, force=force, n_workers=n_workers)
        if errs:
            for e in errs: print(f"error: {e}", file=sys.stderr)
            sys.exit(f"build_site: {len(errs)} notebook(s) could not be processed")
        t1 = time.time()
        stage = cache/'.mkdocs'
        if (stage/'docs').exists(): shutil.rmtree(stage/'docs')
        (stage/'docs'/'assets').mkdir(parents=True)
        (stage/'docs'/'assets'/'site.css').write_text(SITE_CSS, encoding='utf-8')
        home, api, sections, pages = [], [], {}, []  # nav: index, the top-level (numbered API) notebooks, then folders
        for p in nbl:
            rel = p.relative_to(nbs)
            proc = cache/rel
            if not proc.exists():
                print(f"warning: {proc} is missing (the notebook was removed, or run with --force); no page for it", file=sys.stderr)
                continue
            title = nb_title(p).replace('`', '')
            nb, fm = convert_nb(json.loads(proc.read_text(encoding='utf-8')), title)
            page = page_name(rel)
            if fm.get('output-file'): page = (Path(page).parent/fm['output-file']).as_posix()
            if page in [q for q, _ in pages]: page = Path(rel).with_suffix('.html').as_posix()
            dst = (stage/'docs'/page).with_suffix('.ipynb')
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding='utf-8')
            pages.append((page, title))
            entry = {title: Path(page).with_suffix('.ipynb').as_posix()}
            if rel == Path('index.ipynb'): home.append(entry)
            elif rel.parent == Path('.'): api.append(entry)
            else: sections.setdefault(' / '.join(s.replace('_', ' ').title() for s in rel.parent.parts), []).append(entry)
        nav = home + ([{'API reference': api}] if api else []) + [{k: v} for k, v in sections.items()]
        for f in nbs.rglob('*'):  # pictures that markdown cells point to
            r = f.relative_to(nbs)
            if f.is_file() and f.suffix.lower() in ASSETS and not any(s.startswith(('_', '.')) for s in r.parts):
                (stage/'docs'/r).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, stage/'docs'/r)
        yml = stage/'mkdocs.yml'
        yml.write_text(yaml.safe_dump(site_config(cfg, nav, stage), sort_keys=False, allow_unicode=True), encoding='utf-8')
        import subprocess
        cmd = [sys.executable, '-m', 'mkdocs', 'build', '--clean', '-f', str(yml), '-d', str(out)]
        r = subprocess.run(cmd, cwd=stage, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        log = [l for l in r.stdout.splitlines() if verbose or r.returncode or not l.startswith('INFO')]
        if log: print('\n'.join(log), file=sys.stderr)
        if r.returncode: sys.exit(f"build_site: mkdocs failed ({r.returncode})")
        bad = [f"{h.relative_to(out)}: {m}" for h in out.rglob('*.html')  # what a page would fetch from elsewhere
               for m in re.findall(r'<(?:script|link|img|iframe|source|video|audio)\b[^>]*?\b(?:src|href)="((?:https?:)?//[^"]+)"',
                                   h.read_text(encoding='utf-8'))]
        if bad:
            for b in bad[:20]: print(f"error: loads from the network: {b}", file=sys.stderr)
            sys.exit("build_site: the site would load files from the network")
    print(f"built {len(pages)} pages into {out} in {time.time()-t0:.1f}s "
          f"(nbdev processing of {n} changed notebook(s): {t1-t0:.1f}s, rendering: {time.time()-t1:.1f}s)")
    for page, title in pages: print(f"  {page}: {title}")
    return out, pages

# ---------------------------------------------------------------------------------------------------------------
# mkdocs hooks (mkdocs loads this file as a module for them)

def _slug(text):
    "Pandoc's identifiers, which nbdev's API links use: lower case, spaces to dashes, only alphanumerics and _-."
    s = re.sub(r'[^\w\s.-]', '', text.strip().lower(), flags=re.U)
    s = re.sub(r'\s+', '-', s)
    return re.sub(r'^[^a-z_]+', '', s) or 'section'  # nbdev's links keep a leading underscore

def on_config(config):
    "mkdocs-jupyter makes a markdown copy of each notebook for its TOC; `on_page_content` makes the TOC, so skip it"
    try:
        import mkdocs_jupyter.plugin as mj
        if hasattr(mj, '_get_nb_toc_tokens'): mj._get_nb_toc_tokens = lambda path, depth: ([], None)
    except ImportError: pass
    return config

_script_re = re.compile(r'<script\b([^>]*)>(.*?)</script>', re.S)
_style_re = re.compile(r'<style\b[^>]*>(.*?)</style>', re.S)
_head_re = re.compile(r'<h([1-6])\b([^>]*)>(.*?)</h\1>', re.S)
_anchor_re = re.compile(r'<a\b[^>]*class="anchor-link"[^>]*>.*?</a>', re.S)
_href_re = re.compile(r'<a\b[^>]*?\bhref="([^"]*)"[^>]*>')

def on_page_content(content, page, config, files):
    "Pandoc ids on headings, relative links to the project's own pages, no CDN scripts, a TOC that matches"
    from mkdocs.structure.toc import get_toc
    from posixpath import relpath, dirname, normpath
    if not page.file.src_uri.endswith('.ipynb'): return content
    here = dirname(page.file.dest_uri) or '.'
    def script(m):
        a, body = m.groups()
        cdn = re.search(r'\bsrc="(https?:)?//', a) or 'text/x-mathjax-config' in a or 'cdnjs.' in body or 'mermaid' in body
        return '' if cdn else m.group(0)
    content = _script_re.sub(script, content)
    def style(m):  # nbconvert's 570 kB of JupyterLab CSS: one shared file, not a copy in every page
        css = m.group(1)
        if len(css) < 20000: return m.group(0)
        name = f"assets/notebook-{hashlib.md5(css.encode()).hexdigest()[:10]}.css"
        f = Path(config['site_dir'])/name
        if not f.exists(): f.parent.mkdir(parents=True, exist_ok=True); f.write_text(css, encoding='utf-8')
        return f'<link rel="stylesheet" href="{relpath(name, here)}">'
    content = _style_re.sub(style, content)
    seen, old2new, toc = set(), {}, []
    def head(m):
        lvl, attrs, inner = int(m.group(1)), m.group(2), _anchor_re.sub('', m.group(3))
        text = html.unescape(re.sub(r'<[^>]+>', '', inner)).strip()
        new = base = _slug(text)
        k = 1
        while new in seen: new = f"{base}-{k}"; k += 1
        seen.add(new)
        old = re.search(r'\sid="([^"]*)"', attrs)
        if old: old2new.setdefault(html.unescape(old.group(1)), new)
        attrs = re.sub(r'\sid="[^"]*"', '', attrs)
        if 2 <= lvl <= 4: toc.append({'level': lvl, 'id': new, 'name': html.escape(text), 'children': []})
        return f'<h{lvl} id="{new}"{attrs}>{inner}<a class="anchor-link" href="#{new}" title="Permanent link">¶</a></h{lvl}>'
    content = _head_re.sub(head, content)
    doc_url = config['extra'].get('lits_doc_url', '')
    pages = {f.dest_uri for f in files.documentation_pages()}
    nb_pages = {f.src_uri: f.dest_uri for f in files.documentation_pages()}
    def link(m):
        tag, href = m.group(0), html.unescape(m.group(1))
        if 'class="anchor-link"' in tag: return tag
        if href.startswith('#'):
            return tag.replace(m.group(1), html.escape('#' + old2new[href[1:]])) if href[1:] in old2new else tag
        target, _, frag = href.partition('#')
        dest = None
        if doc_url and target.startswith(doc_url): dest = target[len(doc_url):] or 'index.html'
        elif not re.match(r'^[a-z][\w+.-]*:', target) and target.endswith('.ipynb'):
            src = normpath(target.lstrip('/') if target.startswith('/') else f"{dirname(page.file.src_uri)}/{target}".lstrip('/'))
            dest = nb_pages.get(src) or nb_pages.get(page_name(src).replace('.html', '.ipynb'))
        if not (dest and dest in pages): return tag
        new = relpath(dest, here) + (f'#{frag}' if frag else '')
        return re.sub(r'\s+target="_blank"', '', tag.replace(f'href="{m.group(1)}"', f'href="{html.escape(new)}"', 1))
    content = _href_re.sub(link, content)
    nested, stack = [], []
    for t in toc:
        while stack and stack[-1]['level'] >= t['level']: stack.pop()
        (stack[-1]['children'] if stack else nested).append(t)
        stack.append(t)
    page.toc = get_toc(nested)
    return content

def on_post_build(config):
    "Links to a heading that no page has (nbdev links every backticked name it knows, private ones too) are unlinked"
    from posixpath import normpath, join, dirname
    site = Path(config['site_dir'])
    pages = {p.relative_to(site).as_posix(): p for p in site.rglob('*.html')}
    ids = {k: {html.unescape(i) for i in re.findall(r'\sid="([^"]+)"', p.read_text(encoding='utf-8'))} for k, p in pages.items()}
    link_re = re.compile(r'<a href="([^"#:]*)#([^"]+)"([^>]*)>(.*?)</a>', re.S)
    dropped = []
    for k, p in pages.items():
        s = p.read_text(encoding='utf-8')
        def fix(m):
            href, frag, rest, inner = m.groups()
            target = normpath(join(dirname(k), href)) if href else k
            if target not in ids or html.unescape(frag) in ids[target]: return m.group(0)
            dropped.append(f"{k} -> {target}#{frag}")
            return inner if inner.startswith('<code>') else f'<a href="{href}"{rest}>{inner}</a>'
        new = link_re.sub(fix, s)
        if new != s: p.write_text(new, encoding='utf-8')
    if dropped:
        uniq = sorted(set(d.split(' -> ')[1] for d in dropped))
        print(f"warning: {len(dropped)} link(s) to {len(uniq)} heading(s) that no page has were unlinked: {', '.join(uniq)}")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=None, help='folder of the site (emptied first; default: _site in the repository)')
    ap.add_argument('--force', action='store_true', help='process every notebook again, not only the changed ones')
    ap.add_argument('--n-workers', type=int, default=1, help='processes for the nbdev processing (one imports torch and fastai once)')
    ap.add_argument('-v', '--verbose', action='store_true', help="show mkdocs' information lines too")
    a = ap.parse_args()
    out = Path(a.out).resolve() if a.out else HERE.parent.parent/'_site'
    os.chdir(HERE.parent.parent)  # nbdev finds settings.ini from the working directory
    build(out, force=a.force, n_workers=a.n_workers, verbose=a.verbose)

if __name__ == '__main__': main()
