"""Start-up time of every console script: `CMD --help`, against importing torch and fastai (what a command paid
before the command lines imported the library lazily), measured in one run.

Usage: python tests/bench_startup.py [--repeats 5]

Prints one row per console script of lits_fastai: the median seconds of `CMD --help` over the repeats, and that time
as a share of `python -c "import fastai.vision.all"` measured in the same run. `import lits_fastai.core` is timed too
(it stays free of torch)."""
import argparse, statistics, subprocess, sys, time
from importlib.metadata import entry_points
from pathlib import Path

def timed(cmd:list, repeats:int) -> float:
    "Median wall seconds of running `cmd` (which must succeed) `repeats` times"
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    py, bindir = sys.executable, Path(sys.executable).parent
    ref = timed([py, '-c', 'import fastai.vision.all'], a.repeats)
    core = timed([py, '-c', 'import lits_fastai.core'], a.repeats)
    torch_free = subprocess.run([py, '-c', "import sys, lits_fastai.core, lits_fastai.cli; print('torch' not in sys.modules)"],
                                capture_output=True, text=True, check=True).stdout.strip() == 'True'
    print(f"reference: python -c 'import fastai.vision.all' {ref:.2f} s (median of {a.repeats})")
    print(f"import lits_fastai.core: {core:.2f} s; lits_fastai.core and lits_fastai.cli import no torch: {torch_free}")
    print(f"{'command':<16}{'--help s':>10}{'/ fastai import':>17}")
    scripts = sorted(e.name for e in entry_points(group='console_scripts') if e.value.startswith('lits_fastai.'))
    for s in scripts:
        t = timed([str(bindir/s), '--help'], a.repeats)
        print(f"{s:<16}{t:>10.2f}{t/ref:>17.2f}")

if __name__ == '__main__': main()
