"""The local APIC as a PCI function's interrupt messages reach it (Intel SDM
vol. 3A, 11.11 "Message Signalled Interrupts")."""

# 11.11.1 Message Address Register: 31:20 = FEEh, the destination ID in 19:12;
# the vector is in data 7:0 (11.11.2).
MSI_ADDR_BASE = 0xFEE0_0000
MSI_ADDR_DEST_ID_SHIFT = 12
MSI_ADDR_DEST_ID_MASK = 0xFF


def msi_address(apic_id: int) -> int:
    """The message address that targets the local APIC ``apic_id`` (physical destination mode)."""
    return MSI_ADDR_BASE | (apic_id & MSI_ADDR_DEST_ID_MASK) << MSI_ADDR_DEST_ID_SHIFT


def msi_destination(address: int) -> int:
    """The destination APIC ID of a message address."""
    return address >> MSI_ADDR_DEST_ID_SHIFT & MSI_ADDR_DEST_ID_MASK
