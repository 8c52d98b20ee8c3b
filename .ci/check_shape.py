#!/usr/bin/env python3
"""The library's shape: functions over 40 lines, public signatures over 12 parameters (a command line's flags are
counted apart: they map onto the library's values), lines over 120 characters (the `__all__` lists nbdev generates
counted apart: nbdev wraps them at 120 without their `__all__ = ` prefix),
and the internal import graph (imports inside functions counted). Prints all four; exits 1 on any of them.
Usage: python .ci/check_shape.py [PACKAGE_DIR]   (default: lits_fastai)"""
import ast, sys
from pathlib import Path

MAX_LINES, MAX_PARAMS, MAX_WIDTH, WORST = 40, 12, 120, 5
pkg = Path(sys.argv[1] if __name__ == '__main__' and len(sys.argv) > 1 else Path(__file__).resolve().parents[1]/'lits_fastai')
files = sorted(p for p in pkg.rglob('*.py') if not p.name.startswith('_modidx'))

def modname(p:Path) -> str:
    parts = p.relative_to(pkg).with_suffix('').parts
    return '.'.join(parts[:-1] if p.name == '__init__.py' else parts)

def functions(tree):
    "(qualified name, node) of every function not nested in another function"
    def walk(node, prefix):
        for n in ast.iter_child_nodes(node):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)): yield f"{prefix}{n.name}", n
            elif isinstance(n, ast.ClassDef): yield from walk(n, f"{prefix}{n.name}.")
    yield from walk(tree, '')

def n_params(f) -> int:
    a = f.args
    ps = [*a.posonlyargs, *a.args, *a.kwonlyargs] + [o for o in (a.vararg, a.kwarg) if o]
    return len([p for p in ps if p.arg not in ('self', 'cls')])

def is_command(f) -> bool:
    "Is `f` a command line (decorated with fastcore's `call_parse`)? Its parameters are its flags, not a signature to call"
    return any((d.id if isinstance(d, ast.Name) else getattr(d, 'attr', '')) == 'call_parse' for d in f.decorator_list)

def public(qual:str) -> bool: return not any(part.startswith('_') for part in qual.split('.'))

def imports(mod:str, tree, is_pkg:bool) -> set:
    "Internal modules `mod` imports, anywhere in the file"
    name, known, deps = pkg.name, {modname(p) for p in files}, set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            deps |= {a.name[len(name)+1:] for a in node.names if a.name.startswith(name + '.')}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = ([p for p in mod.split('.') if p] + ['__init__'] if is_pkg else mod.split('.'))[:-node.level]
                base = '.'.join(p for p in parts + [base] if p)
            elif base.startswith(name + '.'): base = base[len(name)+1:]
            elif base == name: base = ''
            else: continue
            for a in node.names:
                o = f"{base}.{a.name}".strip('.')
                deps.add(o if o in known else base)
    return {d for d in deps if d and d != mod}

def cycles(graph:dict) -> list:
    "Strongly connected components with more than one module (Tarjan)"
    idx, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        idx[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in graph.get(v, ()):
            if w not in idx: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in idx: visit(v)
    return out

def graph_of(files=files) -> dict:
    "{module: internal modules it imports}"
    return {modname(p): imports(modname(p), ast.parse(p.read_text()), p.name == '__init__.py') for p in files}

def report(title, rows, unit):
    rows = sorted(rows, reverse=True)
    print(f"{title}: {len(rows)}" + (f"; worst: {', '.join(f'{w} ({n} {unit})' for n, w in rows[:WORST])}" if rows else ''))

def main() -> int:
    long_fns, wide_sigs, wide_lines, generated, flags = [], [], [], [], []
    for p in files:
        text = p.read_text()
        mod = modname(p)
        for q, f in functions(ast.parse(text)):
            n = f.end_lineno - f.lineno + 1
            if n > MAX_LINES: long_fns.append((n, f"{mod}.{q}"))
            if is_command(f): flags.append((n_params(f), f"{mod}.{q}"))
            elif public(q) and n_params(f) > MAX_PARAMS: wide_sigs.append((n_params(f), f"{mod}.{q}"))
        for i, l in enumerate(text.splitlines(), 1):
            if len(l) > MAX_WIDTH:
                (generated if l.startswith('__all__ = ') else wide_lines).append((len(l), f"{p.relative_to(pkg.parent)}:{i}"))
    report(f"functions over {MAX_LINES} lines", long_fns, 'lines')
    report(f"public signatures over {MAX_PARAMS} parameters", wide_sigs, 'parameters')
    report(f"library lines over {MAX_WIDTH} characters", wide_lines, 'characters')
    print(f"nbdev's generated __all__ lines over {MAX_WIDTH} characters: {len(generated)}")
    report("command lines (their parameters are flags, counted apart)", flags, 'flags')
    graph = graph_of()
    cyc = cycles(graph)
    print(f"import graph: {len(graph)} modules, " + ('no import cycles' if not cyc else
          f"{len(cyc)} import cycle(s): " + '; '.join(' <-> '.join(c) for c in cyc)))
    return 1 if cyc or long_fns or wide_sigs or wide_lines else 0

if __name__ == '__main__': sys.exit(main())
