"""Many addresses through rtnetlink for real (root only): IPAddresses run inside a lab namespace
adds a hundred addresses of both families in one batch, reports a refused one by its address,
and removes them in one batch; `ip` then shows exactly what it says."""
import json
import sys

import pytest

from paths import ROOT
from netns import have_root_net

pytestmark = pytest.mark.skipif(not have_root_net(), reason="needs root and ip(8) for network namespaces")

SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import heartbeat as hb

class Lines:
    def __init__(self): self.lines = []
    def info(self, text): self.lines.append(text)
    warn = error = info

log = Lines()
ips = hb.IPAddresses(log=log, kernel=hb.IpCommand(hb.run_command) if sys.argv[2] == "ip" else None)
wanted = [hb.parse_ip_spec(f"10.77.0.{100 + n}/24/eth0") for n in range(50)]
wanted += [hb.parse_resource(f"IPv6addr::fd77::1:{n:x}/64/eth0", []) for n in range(50)]
wanted.append(hb.parse_resource("IPv6addr::fd78::1/64/nosuch0", []))
started = time.monotonic()
failed, probe = ips.add(wanted)
took = time.monotonic() - started
verdict = probe.conflicts()
held = sum(1 for res in wanted if ips.held(res))
ips.remove(wanted)
print(json.dumps({"kernel": type(ips.kernel).__name__, "failed": [[r.spec, why] for r, why in failed],
                  "conflicts": sorted(verdict), "held": held, "left": sum(1 for res in wanted if ips.held(res)),
                  "took_s": took, "log": log.lines}))
"""


@pytest.mark.parametrize("lab", [("prime", "client")], indirect=True)
@pytest.mark.parametrize("kernel", ["Rtnetlink", "ip"])
def test_a_hundred_addresses_in_one_batch_and_an_error_that_names_its_address(lab, kernel):
    """Through rtnetlink, and through ip(8) where rtnetlink cannot be opened: the same result."""
    lab.exec("prime", ["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"])
    lab.exec("prime", ["ip", "-6", "addr", "add", "fd77::1/64", "dev", "eth0", "nodad"])
    out = lab.exec("prime", [sys.executable, "-c", SCRIPT, ROOT, kernel], timeout=60)
    result = json.loads(out.stdout)
    print(f"\n100 addresses (50 IPv4, 50 IPv6) added through {kernel} in {result['took_s'] * 1000:.1f} ms")
    assert result["kernel"] == ("Rtnetlink" if kernel == "Rtnetlink" else "IpCommand")
    [[spec, why]] = result["failed"]
    assert spec == "IPv6addr::fd78::1/64/nosuch0" and why.startswith("cannot add fd78::1/64 on nosuch0: ")
    assert ("interface nosuch0 does not exist" if kernel == "Rtnetlink" else 'Cannot find device "nosuch0"') in why
    assert result["held"] == 100 and result["left"] == 0 and result["conflicts"] == []
    assert "IPaddr: added 10.77.0.100/24 on eth0 (eth0:0)" in result["log"]
    assert "IPv6addr: added fd77::1:31/64 on eth0" in result["log"]
    assert sum(line.startswith(("IPaddr: removed", "IPv6addr: removed")) for line in result["log"]) == 100
