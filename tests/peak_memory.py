"""Peak resident memory of a block of code, for the benchmark scripts' worker processes.

`PEAK` is source text that a benchmark puts at the top of the program it runs in a fresh Python process (so the
measurement starts from an empty process): it defines `Peak`, a context manager whose `peak` and `base` are the
highest and the starting resident set size in bytes."""

PEAK = r'''
import json, sys, threading, time
from pathlib import Path

def _status(key):
    with open('/proc/self/status') as f:
        for l in f:
            if l.startswith(key): return int(l.split()[1]) * 1024
    return 0

class Peak:
    "Peak RSS during a block: the kernel's high-water mark reset at the start, or 2 ms sampling where that is refused"
    def __enter__(self):
        self.base = _status('VmRSS:')
        try:
            with open('/proc/self/clear_refs', 'w') as f: f.write('5')      # resets VmHWM to the current RSS
            self.hwm = _status('VmHWM:') <= self.base * 1.05 + (8 << 20)
        except OSError: self.hwm = False
        self.peak, self.stop = self.base, False
        def sample():
            while not self.stop: self.peak = max(self.peak, _status('VmRSS:')); time.sleep(.002)
        self.t = threading.Thread(target=sample, daemon=True); self.t.start()
        return self
    def __exit__(self, *a):
        self.stop = True; self.t.join()
        self.peak = max(self.peak, _status('VmHWM:') if self.hwm else 0)
'''
