"""First-run bar: `lits-demo` with no arguments goes from nothing to a scored NIfTI mask of a held-out case and its
picture in <= 90 s wall on a 2-core CPU, with held-out liver Dice >= 0.90.

Runs the installed `lits-demo` (beside this Python, else on PATH) in a subprocess, in a fresh temporary folder, with
stdout to a pipe (so its progress comes as plain lines, echoed here as they arrive), then reads the held-out case's
metrics from the `metrics.csv` it wrote. Prints the wall time (process start to exit, imports included) and the
held-out liver and tumour Dice, and PASS / FAIL against `--seconds` and `--liver`. Exit status 0 on PASS, 1 otherwise.
Not collected by pytest (a timed run belongs on an idle machine: other jobs on the CPU slow it down).

    .venv/bin/python tests/bench_demo.py                  # the bars: 90 s, liver Dice 0.90
    .venv/bin/python tests/bench_demo.py --repeats 2      # two fresh runs; the bars apply to each
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

def lits_demo():
    "Path of the `lits-demo` command of this Python's environment"
    exe = Path(sys.executable).parent/'lits-demo'
    return str(exe) if exe.exists() else shutil.which('lits-demo')

def run_once(args, tmp:Path):
    "Run `lits-demo` in `tmp`; returns (wall seconds, exit status, per-case metrics DataFrame or None)"
    import pandas as pd
    t0 = time.perf_counter()
    p = subprocess.Popen([lits_demo(), *args], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout: print('  | ' + line, end='', flush=True)
    rc = p.wait()
    wall = time.perf_counter() - t0
    f = tmp/'lits_demo'/'metrics.csv'
    return wall, rc, (pd.read_csv(f, dtype={'case': str}) if rc == 0 and f.exists() else None)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--seconds', type=float, default=90., help='wall-time bar (s)')
    p.add_argument('--liver', type=float, default=0.90, help='held-out liver Dice bar')
    p.add_argument('--repeats', type=int, default=1, help='fresh runs; the bars apply to each')
    p.add_argument('demo_args', nargs='*', help="arguments passed to lits-demo (default none: the first run a user makes)")
    a = p.parse_args(argv)
    print(f"command: python tests/bench_demo.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"lits-demo: {lits_demo()} {' '.join(a.demo_args)}; CPU cores: {os.cpu_count()}, load average: "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    ok = True
    for i in range(a.repeats):
        with tempfile.TemporaryDirectory() as d:
            wall, rc, m = run_once(a.demo_args, Path(d))
        if m is None:
            print(f"run {i+1}: lits-demo exited {rc} after {wall:.1f} s: FAIL"); ok = False; continue
        dice = m.set_index('cls')['dice']
        liver, tumor = float(dice.get('liver', float('nan'))), float(dice.get('tumor', float('nan')))
        ok_t, ok_l = wall <= a.seconds, liver >= a.liver
        print(f"run {i+1}: wall time {wall:.1f} s (bar <= {a.seconds:.0f} s): {'PASS' if ok_t else 'FAIL'}; held-out case "
              f"{m['case'].iloc[0]}: liver Dice {liver:.4f} (bar >= {a.liver:.2f}): {'PASS' if ok_l else 'FAIL'}; tumour Dice {tumor:.4f}")
        ok = ok and ok_t and ok_l
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print('PASS' if ok else 'FAIL')
    return 0 if ok else 1

if __name__ == '__main__': sys.exit(main())
