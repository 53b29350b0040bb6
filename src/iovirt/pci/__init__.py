"""PCI configuration space, functions with BARs and capabilities, MSI and
MSI-X, and the bus with its host bridge.  Layouts come from
:mod:`iovirt.spec.pci`."""

from .bus import HostBridge, PciBus
from .config import ConfigSpace
from .function import Bar, PciFunction
from .msi import Msi
from .msix import MsixTable

__all__ = ["Bar", "ConfigSpace", "HostBridge", "Msi", "MsixTable", "PciBus", "PciFunction"]
