import copy
from dataclasses import replace
from functools import reduce
from operator import getitem
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from iovirt.experiments.catalog import DEVICES
from iovirt.experiments.scenario import Scenario, ScenarioError, bridge_port, load_scenario

EXAMPLE = Path(__file__).parents[1] / "examples" / "emulated-e1000.yaml"
PROFILE = (Path(__file__).parent.parent / "src/iovirt/profiles/default.yaml").read_text().replace(
    "name: default", "name: tiny", 1)
PASSTHROUGH = {"model": "passthrough", "device": "ixgbe", "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}
VF = {**PASSTHROUGH, "model": "sriov", "device": "ixgbevf", "uplink": "pnic0"}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("profiles") / "tiny.yaml"
    path.write_text(PROFILE)
    return {**yaml.safe_load(EXAMPLE.read_text()), "profile": str(path)}


def put(*path, value):
    """An edit that sets data[path[0]]...[path[-1]] = value."""
    def edit(data):
        reduce(getitem, path[:-1], data)[path[-1]] = value
        return data
    return edit


def load(base, *edits):
    return Scenario.from_dict(reduce(lambda data, edit: edit(data), edits, copy.deepcopy(base)), "x.yaml")


def test_example_loads_with_defaults(base):
    """The example fills vcpus, memory, packet sizes and duration with their defaults."""
    s = load(base)
    assert [vm.vcpus for vm in s.vms] == [1, 1] and s.vms[0].memory_mb == 256
    assert [w.packet_size for w in s.workloads] == [64, 1500]
    assert s.workloads[0].duration_ms == 10 and s.workloads[0].count == 5
    assert s.profile.name == "tiny" and s.vms[0].nics[0].backend is None


def test_load_scenario_resolves_relative_profile(tmp_path):
    """A relative profile path resolves against the scenario file's folder."""
    (tmp_path / "tiny.yaml").write_text(PROFILE)
    path = tmp_path / "s.yaml"
    path.write_text(EXAMPLE.read_text().replace("profile: default", "profile: tiny.yaml"))
    s = load_scenario(path)
    assert s.source_path == path and s.profile.name == "tiny"


def test_example_validates_with_default_profile():
    """The shipped example validates against the bundled default profile."""
    assert load_scenario(EXAMPLE).name == "emulated-e1000"


def test_virtio_backend_defaults_to_qemu(base):
    """A virtio-net NIC without a backend gets the device's first backend, qemu."""
    s = load(base, put("vms", 0, "nics", 0, "model", value="paravirt"),
             put("vms", 0, "nics", 0, "device", value="virtio-net"))
    assert s.vms[0].nics[0].backend == "qemu"


@pytest.mark.parametrize("edits, expected", [
    ([put("vms", 0, "nics", 0, "mac", value=41135040001)],
     'vms[0].nics[0].mac: expected a MAC address in quotes, like "52:54:00:00:00:01", got 41135040001'),
    ([put("vms", 0, "nics", 0, "mac", value="01:00:5e:00:00:01")],
     "vms[0].nics[0].mac: expected a unicast MAC"),
    ([put("vms", 0, "nics", 0, "ip", value="10.0.0.0/24")],
     "vms[0].nics[0].ip: expected a host address of 10.0.0.0/24, not its network or broadcast address"),
    ([put("vms", 1, "nics", 0, "ip", value="10.0.0.1/24")],
     "vms[1].nics[0].ip: expected a unique IP address, got '10.0.0.1' again (first at vms[0].nics[0].ip)"),
    ([put("workloads", 1, "packet_size", value=1501)],
     "workloads[1].packet_size: expected 44..1500 bytes: the IPv4 packet"),
    ([put("workloads", 1, "duration_ms", value=0)], "workloads[1].duration_ms: expected a number > 0, got 0"),
    ([put("workloads", 1, "count", value=3)], "workloads[1].count: expected no count for a udp_stream workload"),
    ([put("workloads", 0, "dst", value="vm1")], "workloads[0].dst: expected a VM other than the source, got 'vm1'"),
    ([put("workloads", 0, "dst", value="wire")], "workloads[0].dst: expected a VM: 'wire' needs a physical NIC"),
    ([put("vms", 1, "nics", 0, "ip", value="10.0.1.2/24")],
     "workloads[0].dst: expected a VM with a NIC in a subnet of vm1 (10.0.0.0/24), got 'vm2' (10.0.1.0/24)"),
    ([put("vms", 0, "nics", 0, "backend", value="vhost-net")],
     "vms[0].nics[0].backend: expected no backend for e1000, got 'vhost-net'"),
    ([put("vms", 0, "nics", 0, "uplink", value="pnic0")], "vms[0].nics[0].uplink: expected no uplink for model"),
    ([put("vms", 0, "nics", 0, "model", value="paravirt"), put("vms", 0, "nics", 0, "device", value="netvsc")],
     "vms[0].nics[0].device: expected a device host0 (hypervisor: kvm) can host, got 'netvsc', which needs "
     "hypervisor: hyperv"),
    ([put("vms", 0, "nics", 0, "model", value="paravirt"), put("vms", 0, "nics", 0, "device", value="vmxnet3")],
     "vms[0].nics[0].device: expected a device host0 (hypervisor: kvm) can host, got 'vmxnet3', which needs "
     "hypervisor: esxi"),
    ([put("hosts", 0, "hypervisor", value="esxi"), put("vms", 0, "nics", 0, "device", value="rtl8139")],
     "vms[0].nics[0].device: expected a device host0 (hypervisor: esxi) can host, got 'rtl8139', which is "
     "offered by QEMU/KVM, Xen HVM only"),
    ([put("vms", 1, "name", value="wire")], "vms[1].name: expected a name other than 'wire'"),
    ([put("hosts", 0, "nics", value=[{"name": "pnic0"}, {"name": "pnic0"}])],
     "hosts[0].nics[1].name: expected a unique NIC name, got 'pnic0' again (first at hosts[0].nics[0].name)"),
    ([put("hosts", 0, "nics", value=[{"name": "pnic0", "num_vfs": 65}])],
     "hosts[0].nics[0].num_vfs: expected at most 63 VFs on an x82599 (the PF driver's limit: one of its "
     "64 pools stays the PF's), got 65"),
    ([put("vms", 0, "vcpus", value=True)], "vms[0].vcpus: expected an integer, got True"),
    ([put("name", value="two vms")], "name: expected a name of letters, digits"),
    ([put("vms", value=[])], "vms: expected at least 1 item(s), got an empty list"),
    # sizes a real system refuses, and the simulator could not run (memory, wall time)
    ([put("vms", 0, "memory_mb", value=1_000_000_000)],
     "vms[0].memory_mb: expected at most 8388607 MiB (one KVM memory slot, KVM_MEM_MAX_NR_PAGES"),
    ([put("hosts", 0, "cores", value=2_147_483_648)],
     "hosts[0].cores: expected at most 8192 cores (Linux's NR_CPUS limit, CONFIG_MAXSMP), got 2147483648"),
    ([put("hosts", 0, "hypervisor", value="xen"), put("hosts", 0, "cores", value=4097)],
     "hosts[0].cores: expected at most 4096 cores on a xen host (Xen supports up to 4096 physical CPUs), got 4097"),
    ([put("vms", 0, "vcpus", value=1_000_000)],
     "vms[0].vcpus: expected at most 1024 vCPUs on a kvm host (KVM_MAX_VCPUS), got 1000000"),
    ([put("hosts", 0, "hypervisor", value="xen"), put("vms", 1, "vcpus", value=129)],
     "vms[1].vcpus: expected at most 128 vCPUs on a xen host (HVM_MAX_VCPUS: an HVM domain's limit), got 129"),
    ([put("vms", 0, "bare_metal", value=True), put("vms", 0, "vcpus", value=8193)],
     "vms[0].vcpus: expected at most 8192 CPUs for a bare-metal machine (Linux's NR_CPUS limit"),
    ([put("workloads", 1, "duration_ms", value=65_536)],
     "workloads[1].duration_ms: expected at most 10000 ms of simulated time"),
    ([put("workloads", 0, "count", value=10_001)],
     "workloads[0].count: expected at most 10000 echo requests (one per microsecond of duration_ms"),
    ([put("workloads", 1, "rate_pps", value=1e-300)],
     "workloads[1].rate_pps: expected at least 0.1 packets per second"),
    ([put("workloads", 1, "rate_pps", value=1e300)],
     "workloads[1].rate_pps: expected at most 1000000000 packets per second"),
    ([put("vms", 0, "nics", value=[{"model": "emulated", "device": "e1000", "mac": f"52:54:00:00:01:{i:02x}",
                                    "ip": f"10.0.0.{10 + i}/24"} for i in range(30)])],
     "vms[0].nics: expected at most 29 PCI NICs (bus 0 has 32 slots; 0-2 hold the host bridge"),
    ([put("hosts", 0, "nics", value=[{"name": f"pnic{i}"} for i in range(254)])],
     "hosts[0].nics: expected at most 253 physical NICs (each behind a root port of its own, on buses 03-ff)"),
    ([put("vms", value=[{"name": f"vm{i}", "host": "host0"} for i in range(4097)])],
     "vms: expected at most 4096 VMs"),
    ([put("migration", value={"at_ms": 3, "fail_at_ms": 1})],
     "migration.fail_at_ms: expected a time at or after at_ms (3 ms): both count from the workloads' start, "
     "and the link cannot fail before the migration starts on it, got 1"),
    ([put("migration", value={"at_ms": 1e300})], "migration.at_ms: expected at most 10000 ms"),
    ([put("hosts", 0, "nics", value=[{"name": "pnic0", "link_gbps": 1e-300}])],
     "hosts[0].nics[0].link_gbps: expected at least 0.01 Gbit/s (10BASE-T, the slowest Ethernet), got 1e-300"),
    ([put("hosts", 0, "nics", value=[{"name": "pnic0", "link_gbps": 1e300}])],
     "hosts[0].nics[0].link_gbps: expected at most 800 Gbit/s (800GBASE, IEEE 802.3df), got 1e+300"),
    ([put("migration", value={"link_gbps": 1e-300})], "migration.link_gbps: expected at least 0.01 Gbit/s"),
    ([put("vms", 0, "nics", 0, "rate_mbps", value=1)],
     "vms[0].nics[0].rate_mbps: expected at least 11 Mbit/s (the PF driver takes a max_tx_rate above 10, "
     "ixgbe_ndo_set_vf_bw), got 1"),
    ([put("vms", 0, "nics", 0, "rate_mbps", value=2**40)],
     "vms[0].nics[0].rate_mbps: expected at most 10000 Mbit/s (the 82599's 10 Gbit/s link), got 1099511627776"),
    ([put("workloads", 0, "duration_ms", value=1e-9)],
     "workloads[0].count: expected at most 0 echo requests (one per microsecond of duration_ms, 1e-09), got 5"),
    ([put("migration", value={"downtime_ms": 1e300})],
     "migration.downtime_ms: expected at most 2000000 ms (QEMU's downtime-limit maximum, 2000 s)"),
])
def test_wiring_and_value_errors(base, edits, expected):
    """Each bad value or wiring gives one line naming the path, the expectation and the value found."""
    with pytest.raises(ScenarioError) as err:
        load(base, *edits)
    assert str(err.value).startswith(f"x.yaml: {expected}")
    assert "\n" not in str(err.value)


def test_a_port_whose_vfs_its_pf_driver_holds_is_not_passed_through(base, monkeypatch):
    monkeypatch.setitem(DEVICES, "ixgbe", replace(DEVICES["ixgbe"], implemented=True))
    with pytest.raises(ScenarioError) as err:
        load(base, put("hosts", 0, "nics", value=[{"name": "pnic0", "num_vfs": 2}]),
             put("vms", 0, "nics", 0, value={**PASSTHROUGH, "uplink": "pnic0"}))
    assert str(err.value) == ("x.yaml: vms[0].nics[0].uplink: expected a physical NIC free for pass-through, got "
                              "'pnic0' (0000:03:00.0), whose 2 VFs its host's PF driver holds it for")


@pytest.mark.parametrize("nic, expected", [
    ({**PASSTHROUGH, "uplink": "pnic0"},
     "vms[1].nics[0].uplink: expected a physical NIC free for pass-through, got 'pnic0' (0000:03:00.0), "
     "already assigned to vm1 (vms[0].nics[0]); cannot also assign it to vm2"),
    (VF, "vms[1].nics[0].uplink: expected a physical NIC with a free VF, got 'pnic0' (num_vfs 1, all taken)"),
])
def test_uplink_sharing(base, monkeypatch, nic, expected):
    """A passed-through port serves one NIC only; SR-IOV NICs cannot outnumber the port's VFs."""
    for name in ("ixgbe", "ixgbevf"):
        monkeypatch.setitem(DEVICES, name, replace(DEVICES[name], implemented=True))
    with pytest.raises(ScenarioError) as err:
        load(base, put("hosts", 0, "nics", value=[{"name": "pnic0", "num_vfs": 1 if nic is VF else 0}]),
             put("vms", 0, "nics", 0, value=nic),
             put("vms", 1, "nics", 0, value={**nic, "mac": "52:54:00:00:00:02", "ip": "10.0.0.2/24"}))
    assert str(err.value).startswith(f"x.yaml: {expected}")


def _paths(node, prefix=()):
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_junk_only_raises_scenario_error(base, data):
    """Random junk at random keys of a valid scenario gives a valid Scenario or a one-line ScenarioError."""
    doc = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
        key = data.draw(st.one_of(st.just(path[-1]), st.text(max_size=6)))
        parent = reduce(getitem, path[:-1], doc)
        if isinstance(parent, dict) or key == path[-1]:
            parent[key] = data.draw(JUNK)
    try:
        Scenario.from_dict(doc)
    except ScenarioError as exc:
        assert str(exc).startswith("<dict>: ") and "\n" not in str(exc)


def test_wire_needs_a_port_the_vm_owns_or_the_host_can_bridge(base):
    """dst: wire from a software VM is refused when every port of its host is passed through."""
    data = copy.deepcopy(base)
    data["hosts"][0]["nics"] = [{"name": "pnic0", "kind": "x82599"}]
    data["vms"][1]["nics"][0].update(model="passthrough", device="ixgbe", uplink="pnic0")
    data["workloads"] = [{"type": "udp_stream", "src": "vm1", "dst": "wire"}]
    with pytest.raises(ScenarioError, match=r"workloads\[0\]\.dst: .*every NIC of host0 is assigned"):
        Scenario.from_dict(data, source="x.yaml")


def test_a_port_with_vfs_also_bridges_the_software_vms(base):
    """A port whose VFs another VM uses is the bridge's too (the PF in its default pool); a free
    port without VFs is still preferred."""
    data = copy.deepcopy(base)
    data["hosts"][0]["nics"] = [{"name": "pnic0", "kind": "x82599", "num_vfs": 2}]
    data["vms"][1]["nics"][0].update(model="sriov", device="ixgbevf", uplink="pnic0")
    data["workloads"] = [{"type": "udp_stream", "src": "vm1", "dst": "wire"}]
    scenario = Scenario.from_dict(data, source="x.yaml")
    hosts, vms = {h.name: h for h in scenario.hosts}, {v.name: v for v in scenario.vms}
    assert bridge_port("host0", vms, hosts) == "pnic0"
    data["hosts"][0]["nics"].append({"name": "pnic1", "kind": "x82599"})
    scenario = Scenario.from_dict(data, source="x.yaml")
    assert bridge_port("host0", vms, {h.name: h for h in scenario.hosts}) == "pnic1"


def test_a_planned_device_is_refused_as_not_implemented(base, monkeypatch):
    """A device the catalogue lists as planned (no model yet) is a one-line error naming it."""
    from iovirt.experiments import catalog
    monkeypatch.setitem(catalog.DEVICES, "sketch", catalog.Device("sketch", "paravirt", "a NIC on paper", ("KVM",)))
    with pytest.raises(ScenarioError) as err:
        load(base, put("vms", 0, "nics", 0, "model", value="paravirt"),
             put("vms", 0, "nics", 0, "device", value="sketch"))
    assert str(err.value).startswith("x.yaml: vms[0].nics[0].device: expected a device implemented in this build")
