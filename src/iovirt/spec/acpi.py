"""ACPI PCI hot plug of bus 0 as QEMU's pc machine offers it (QEMU
docs/specs/acpi_pci_hotplug.rst, hw/acpi/pcihp.c): the PIIX4 PM's GPE block,
whose bit 1 signals a hot-plug event through the SCI, and the register block
the DSDT's GPE.1 method (PCNT) and each slot's _EJ0 read and write.  GPE
semantics: ACPI 6.4 section 5.6.4."""

from .fields import Register, RegisterMap

SCI_IRQ = 9                         # PIIX4 PM: the SCI is ISA IRQ 9 (FADT SCI_INT)

# ACPI GPE block, I/O 0xafe0-0xafe3, byte access: status bits, then enable bits
GPE0_BLK = 0xAFE0
GPE0_BLK_LEN = 4
GPE0 = RegisterMap("GPE0", [
    Register("GPE0_STS", 0x0, 2, access="w1c", doc="event status, write one to clear"),
    Register("GPE0_EN", 0x2, 2, reset=1 << 1,
             doc="as OSPM leaves it after ACPI init: GPE.1 enabled (the DSDT has _E01)"),
])
GPE_PCI_HOTPLUG = 1 << 1            # GPE.1: PCI hot plug / eject (ACPI_PCI_HOTPLUG_STATUS)

# PCI hot-plug registers, I/O 0xae00-0xae13, 4-byte access, one bit per slot of bus 0
PCIHP_ADDR = 0xAE00
PCIHP_LEN = 0x14
PCIHP = RegisterMap("acpi-pcihp", [
    Register("PCIU", 0x00, access="rc", doc="slot injection notification pending"),
    Register("PCID", 0x04, access="ro", doc="slot removal notification pending (cleared by the eject)"),
    Register("B0EJ", 0x08, doc="write: eject the slots (_EJ0); read: hot-plug feature set (none)"),
    Register("PCIRMV", 0x0C, access="ro", doc="slots whose device is removable (_RMV)"),
    Register("BNUM", 0x10, doc="bus selector: bus 0 only here"),
])
