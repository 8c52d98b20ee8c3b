import os, subprocess, sys, shutil
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')
# one BLAS/OpenMP thread per test process (and the commands it runs): pytest-xdist runs one process per core
os.environ.setdefault('OMP_NUM_THREADS', '1')

def run(*args, ok=True, timeout=600, **kw):
    "Run an installed lits-* command line; return the CompletedProcess"
    exe = shutil.which(args[0]) or str(Path(sys.executable).parent/args[0])
    p = subprocess.run([exe, *map(str, args[1:])], capture_output=True, text=True, timeout=timeout, **kw)
    if ok is True and p.returncode != 0: raise AssertionError(f"{args} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    if ok is False and p.returncode == 0: raise AssertionError(f"{args} should have failed\n{p.stdout}\n{p.stderr}")
    return p

@pytest.fixture(scope='session')
def synth_data(tmp_path_factory):
    "Six small synthetic LiTS cases in the Kaggle layout, made by the lits-synth command"
    d = tmp_path_factory.mktemp('synth')/'data'
    run('lits-synth', d, '--n-cases', 6, '--seed', 1, '--size', '64x64x20')
    return d

@pytest.fixture(scope='session')
def synth_cache(synth_data, tmp_path_factory):
    c = tmp_path_factory.mktemp('cache')/'cache'
    run('lits-prepare', synth_data, c)
    return c


CHROMIUM, DRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'

def chromium(user_dir, # a fresh folder for the browser's profile
             allow_local:bool=False, # let the browser reach 127.0.0.1 (a local server); every other host fails
            ):
    "A headless Chromium driven by selenium that can reach no host (but 127.0.0.1 with `allow_local`) and logs its console"
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {DRIVER}); .ci/run installs them")
    os.environ['SE_OFFLINE'] = 'true'  # selenium-manager must not look for drivers on the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    rules = 'MAP * ~NOTFOUND' + (' , EXCLUDE 127.0.0.1' if allow_local else '')   # any other host fails, and says so
    for a in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--window-size=1280,900',
              '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
              '--disable-default-apps', '--disable-extensions', f"--user-data-dir={user_dir}", f'--host-resolver-rules={rules}']:
        o.add_argument(a)
    o.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    d.set_page_load_timeout(60)
    return d
