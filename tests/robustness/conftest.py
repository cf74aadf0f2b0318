"""One ``python -m lossd.server`` process shared by the robustness tests that do not stop it.

Its limits are small where generated requests would otherwise make it do real work for long
(training steps, samples, parameters; one job at a time, two queued) and the defaults
elsewhere (the 256 MiB message limit, the thread pool). Tests that measure it (RSS, threads,
children) take their baseline when they start. Drain and crash tests start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.servers import ServedProcess

#: ``lossd serve`` flags of the shared server.
LIMITS = ("--max-tensor-elements", "2000000", "--max-steps", "60", "--max-samples", "3000",
          "--max-parameters", "20000", "--max-epochs", "5", "--max-jobs", "1", "--max-queued-jobs", "2",
          "--workers", "2", "--plugins", "none", "--grace", "1")


@pytest.fixture(scope="session")
def robust_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    workdir = tmp_path_factory.mktemp("robust")
    with ServedProcess.start(workdir, "--data-dir", str(workdir / "data"), *LIMITS) as served:
        yield served
        assert served.proc.poll() is None, "the server died:\n" + "".join(served.log[-40:])
