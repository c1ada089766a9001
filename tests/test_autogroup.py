"""render.worker_nice reaches the scheduler on autogroup kernels: each helper is a session (an
autogroup) of its own, so its group's nice, not only the process's, is set to worker_nice."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from customify.render.pool import RenderJob, RenderPool
from tests.test_render_pool import SPEC

AUTOGROUP = Path("/proc/self/autogroup")


@pytest.mark.skipif(not AUTOGROUP.exists(), reason="this kernel has no autogroups")
def test_a_helper_runs_in_its_own_autogroup_at_worker_nice(tmp_path: Path) -> None:
    before = AUTOGROUP.read_text()
    pool = RenderPool("process", nice=7)
    try:
        made = RenderJob(SPEC, {}, 1, 300, "webp", str(tmp_path / "p.png"), str(tmp_path / "t.webp"))
        assert pool.render(made, time.monotonic() + 60, lambda: None)[0] > 0
        (pid,) = pool.pids()
        group = Path(f"/proc/{pid}/autogroup").read_text().split()
        ours = AUTOGROUP.read_text().split()
        if not ours:  # the kernel prints nothing for a task grouped by a cgroup, where autogroups do not apply
            pytest.skip("this process is scheduled by its cgroup, not by an autogroup")
        assert group[0] != ours[0]  # its own group, not the server's
        assert group[-1] == "7"
        assert os.getpriority(os.PRIO_PROCESS, pid) == 7
        assert AUTOGROUP.read_text() == before  # the server's group is left alone
    finally:
        pool.close()
