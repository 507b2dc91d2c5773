"""keep_freed_memory: glibc's thresholds are raised, bad limits are refused."""
import sys

import pytest

from psyau_graph.train import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_sets_thresholds_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not a glibc system")
    assert keep_freed_memory(64 << 20) is True


@pytest.mark.parametrize("bad", [0, 1 << 19, 1 << 31, 1.5, "1G"])
def test_rejects_bad_limits(bad):
    with pytest.raises(ValueError, match="limit"):
        keep_freed_memory(bad)
