"""The namespace lab itself (root only): a lab that cannot start beside another one with the same
prefix (two `make demo` runs at once) must leave the other one's bridge and namespaces alone."""
import subprocess

import pytest

from netns import Lab, have_root_net, run

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")


def test_a_lab_that_finds_its_names_taken_removes_nothing_of_the_other():
    first = Lab(("a",), prefix="hblabtest")
    try:
        with pytest.raises(subprocess.CalledProcessError):
            Lab(("a",), prefix="hblabtest")
        assert run(["ip", "link", "show", first.bridge], check=False).returncode == 0
        assert first.ns("a") in run(["ip", "netns", "list"]).stdout
        assert first.exec("a", ["ip", "-o", "addr", "show", "eth0"]).stdout
    finally:
        first.close()
    assert run(["ip", "link", "show", first.bridge], check=False).returncode != 0
