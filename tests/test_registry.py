"""The device registry: the device list everything else uses comes from the
device modules' own declarations, and each declared device has what a
scenario needs of it: a model keeping the device contract, a guest driver
that binds it, and a state stream (or the reason it has none)."""

import subprocess
import sys
from dataclasses import replace
from importlib import import_module
from pathlib import Path

import pytest

import iovirt
from iovirt.devices.registry import DeviceEntry, DeviceModel, registry
from iovirt.devices.vmstate import VmState
from iovirt.experiments.catalog import DEVICES
from iovirt.guest.kernel import DRIVERS
from iovirt.hypervisor.emulation import EMULATED

ENTRIES = list(registry().values())
# What every PCI device model has, and what the models a backend port feeds (a tap, a wire) add.
EVERY = ("NAME", "VMSTATE", "bar_handlers")
FED = ("can_receive", "receive")
BUS_PROBES = ("xenbus_probe", "vmbus_probe")     # how a device off the PCI bus is found
assert set(EVERY + FED + ("resume",)) <= set(DeviceModel.__annotations__) | set(vars(DeviceModel))


def problems(entry: DeviceEntry) -> list[str]:
    """What a declared device lacks: its model's members, its driver, its state."""
    out = []
    if entry.pci_id is not None:
        out += [f"no {m}" for m in EVERY if not hasattr(entry.model, m)]
        if entry.kind != "sriov":               # a VF is fed by its NIC's switch, not a port
            out += [f"no {m}" for m in FED if not hasattr(entry.model, m)]
        for ids in entry.pci_ids:
            if not any(d.__module__ == f"iovirt.guest.drivers.{entry.driver}" for d in DRIVERS.get(ids, ())):
                out.append(f"no driver in guest/drivers/{entry.driver}.py binds {ids}")
    else:
        try:
            module = import_module(f"iovirt.guest.drivers.{entry.driver}")
        except ImportError:
            module = None
        if not any(hasattr(module, probe) for probe in BUS_PROBES):
            out.append(f"no xenbus or vmbus driver guest/drivers/{entry.driver}.py")
    state = getattr(entry.model, "VMSTATE", None)
    if isinstance(state, VmState):
        if not hasattr(entry.model, "resume"):
            out.append("a state stream but no resume")
    elif not getattr(entry.model, "MIGRATION_BLOCKER", ""):
        out.append("neither VMSTATE nor the reason it has none")
    return out


def test_the_catalogue_implements_exactly_the_registered_devices():
    implemented = [name for name, device in DEVICES.items() if device.implemented]
    assert sorted(implemented) == sorted(registry())
    assert len(registry()) == len(ENTRIES) >= 8
    assert {DEVICES[e.name].model for e in ENTRIES} == {"emulated", "paravirt", "passthrough", "sriov"}


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_registered_device_has_a_model_a_driver_and_its_state(entry):
    assert problems(entry) == []
    assert entry.model.NAME == entry.name and entry.kind == DEVICES[entry.name].model


@pytest.mark.parametrize("broken, why", [
    (lambda e: replace(e, driver="e1001"), "no driver in guest/drivers/e1001.py"),
    (lambda e: replace(e, pci_id=(0x8086, 0xFFFF)), "no driver in guest/drivers/e1000.py binds"),
    (lambda e: replace(e, model=type("Bare", (), {"NAME": "bare", "bar_handlers": None})), "no VMSTATE"),
    (lambda e: replace(e, model=type("Bare", (), {"NAME": "bare", "VMSTATE": None, "bar_handlers": None,
                                                  "can_receive": None, "receive": None})),
     "neither VMSTATE nor the reason"),
    (lambda e: replace(e, pci_id=None), "no xenbus or vmbus driver"),
])
def test_a_device_missing_a_part_is_reported(broken, why):
    """The check above finds what a declaration lacks (so it can fail)."""
    found = problems(broken(registry()["e1000"]))
    assert any(why in p for p in found), found


def test_the_wirings_and_the_guest_take_their_lists_from_the_registry():
    emulated = {e.name for e in ENTRIES if e.kind == "emulated"}
    assert set(EMULATED) == emulated and {EMULATED[n] for n in emulated} == {registry()[n].model for n in emulated}
    assert {ids for e in ENTRIES for ids in e.pci_ids} == set(DRIVERS)


NEW_DEVICE = '''
from iovirt.devices.e1000 import E1000
from iovirt.devices.registry import DeviceEntry
from iovirt.spec.pci import PCI_TYPE0_HEADER


class E1000X(E1000):
    NAME = "e1000x"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pci.config.set_reg(PCI_TYPE0_HEADER["DEVICE_ID"], 0x100F)


DEVICE = DeviceEntry(E1000X, "emulated", "the 82540EM model under the 82545EM's ID", ("QEMU/KVM",), "e1000x",
                     (0x8086, 0x100F))
'''
NEW_DRIVER = '''
from iovirt.guest.drivers.e1000 import E1000Driver


class E1000XDriver(E1000Driver):
    VENDOR, DEVICE = 0x8086, 0x100F
'''
RUN_IT = '''
import sys
import iovirt.devices, iovirt.guest.drivers
iovirt.devices.__path__.append(sys.argv[1] + "/devices")
iovirt.guest.drivers.__path__.append(sys.argv[1] + "/drivers")
import iovirt
from iovirt.experiments.catalog import DEVICES
nic = {"model": "emulated", "device": "e1000x"}
flow = iovirt.run(iovirt.Scenario.from_dict({"name": "new", "hosts": [{"name": "h", "cores": 4}],
    "vms": [{"name": f"vm{i}", "host": "h", "nics": [nic | {"mac": f"52:54:00:00:00:0{i}", "ip": f"10.0.0.{i}/24"}]}
            for i in (1, 2)],
    "workloads": [{"type": "udp_stream", "src": "vm1", "dst": "vm2", "duration_ms": 0.3}]})).to_dict()["flows"][0]
print(DEVICES["e1000x"].status, flow["device"], flow["delivered"] == flow["sent"] > 0)
'''


def test_a_new_emulated_nic_needs_only_its_own_modules(tmp_path):
    """A device module and a driver module dropped into their folders (no other file edited) give a
    NIC the catalogue lists and a scenario runs traffic through; without them the device is unknown."""
    (tmp_path / "devices").mkdir()
    (tmp_path / "drivers").mkdir()
    (tmp_path / "devices" / "e1000x.py").write_text(NEW_DEVICE)
    (tmp_path / "drivers" / "e1000x.py").write_text(NEW_DRIVER)
    env = {"PYTHONPATH": str(Path(iovirt.__file__).parent.parent)}
    out = subprocess.run([sys.executable, "-c", RUN_IT, str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["implemented", "e1000x", "True"], out.stderr[-2000:]
    (tmp_path / "devices" / "e1000x.py").unlink()
    out = subprocess.run([sys.executable, "-c", RUN_IT, str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.returncode != 0 and "e1000x" in out.stderr
