"""VMware's other virtual NICs on an ESXi host: the E1000 that is an 82545EM,
Flexible (a Vlance that the guest's vmxnet driver morphs into VMXNET),
Enhanced VMXNET (VMXNET2), and the assigned devices (DirectPath I/O, SR-IOV)
with the vmkernel's interrupt path.  Everything is real iovirt code."""

from __future__ import annotations

import pytest

from iovirt.experiments.scenario import Scenario, ScenarioError
from iovirt.experiments.world import World
from iovirt.guest.kernel import DRIVERS
from iovirt.spec import e1000 as e
from iovirt.spec.pci import PCI_DEVICE_ID
from test_hostile import ping, world

E1000 = {"model": "emulated", "device": "e1000"}


def _config_device_id(w: World, vm: str = "vm1") -> int:
    guest = w.guests[vm]
    return guest.pci.config_read(guest.netdevs[0].info.bdf, PCI_DEVICE_ID, 2)


def _one_nic(nic: dict, hypervisor: str = "esxi") -> Scenario:
    return Scenario.from_dict({"name": "x", "hosts": [{"name": "h", "cores": 2, "hypervisor": hypervisor}],
                               "vms": [{"name": "vm1", "host": "h", "nics": [
                                   {**nic, "mac": "52:54:00:00:00:01", "ip": "10.0.0.1/24"}]}]})


# ---- E1000: the 82545EM on ESXi -------------------------------------------------------
@pytest.mark.parametrize("hypervisor, device_id", [("esxi", e.DEVICE_ID_82545EM), ("kvm", e.DEVICE_ID)])
def test_an_e1000_is_the_82545em_on_esxi_and_the_82540em_elsewhere(hypervisor, device_id):
    """The guest reads the chip's ID from configuration space and its EEPROM; the driver binds both and talks."""
    w = world(E1000, hypervisor=hypervisor)
    drv = w.guests["vm1"].netdevs[0]
    assert _config_device_id(w) == device_id
    assert drv._eeprom_read(e.EEPROM_DEVICE_ID) == device_id and drv._eeprom_read(e.EEPROM_VENDOR_ID) == e.VENDOR_ID
    assert len(ping(w, "vm1", "vm2")) == 3


def test_a_scenario_picks_the_82540em_on_esxi_and_is_told_a_variant_no_device_has():
    assert _one_nic({**E1000, "variant": "82540em"}).vms[0].nics[0].variant == "82540em"
    assert _one_nic(E1000).vms[0].nics[0].variant == "82545em"
    assert _one_nic(E1000, "kvm").vms[0].nics[0].variant == "82540em"
    with pytest.raises(ScenarioError, match=r"vms\[0\]\.nics\[0\]\.variant: expected one of 82540em, 82545em "
                                            r"for e1000, got '82544gc'"):
        _one_nic({**E1000, "variant": "82544gc"})
    with pytest.raises(ScenarioError, match=r"nics\[0\]\.variant: expected no variant for vmxnet3"):
        _one_nic({"model": "paravirt", "device": "vmxnet3", "variant": "82545em"})


def test_the_e1000_driver_binds_both_chips():
    assert all(any(d.__name__ == "E1000Driver" for d in DRIVERS[e.VENDOR_ID, dev]) for dev in e.VARIANTS.values())
