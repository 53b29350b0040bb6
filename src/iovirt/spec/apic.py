"""The local APIC as a PCI function's interrupt messages reach it (Intel SDM
vol. 3A, 11.11 "Message Signalled Interrupts")."""

# 11.11.1 Message Address Register: 31:20 = FEEh, the destination ID in 19:12;
# the vector is in data 7:0 (11.11.2).
MSI_ADDR_BASE = 0xFEE0_0000
