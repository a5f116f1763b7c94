"""Security tier: each attack from issue #10 as a regression test against real node processes.
The cluster fixtures are the integration tier's."""
from integration.conftest import cluster_pool, module_pool, pytest_runtest_makereport  # noqa: F401
