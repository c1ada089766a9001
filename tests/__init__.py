import os
import sys

# Container images often set PYTHONDONTWRITEBYTECODE=1 (this machine's does): every test process then
# rewrites the test modules' asserts again (3 s of CPU each, four processes under xdist) and every
# subprocess a test starts compiles what has no cache yet. The caches are gitignored: the tests write them.
# This package loads before conftest, in pytest's process and (inheriting the environment) its xdist workers.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
