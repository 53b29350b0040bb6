"""virtio 1.1 as data: PCI transport (section 4.1), split virtqueue
(section 2.6), network device (section 5.1).  OASIS "Virtual I/O Device
(VIRTIO) Version 1.1", cs01."""

from .fields import Layout

VENDOR_ID = 0x1AF4
DEVICE_ID_NET = 0x1041          # 0x1040 + device type 1 (4.1.2.1)
REVISION = 1

# 4.1.4 vendor-specific capability (struct virtio_pci_cap / virtio_pci_notify_cap)
PCI_CAP = Layout("virtio_pci_cap", 16, [
    ("cap_vndr", 0, 1), ("cap_next", 1, 1), ("cap_len", 2, 1), ("cfg_type", 3, 1),
    ("bar", 4, 1), ("id", 5, 1), ("offset", 8, 4), ("length", 12, 4),
])
NOTIFY_OFF_MULTIPLIER = 16      # offset of notify_off_multiplier in virtio_pci_notify_cap
VIRTIO_PCI_CAP_COMMON_CFG = 1
VIRTIO_PCI_CAP_NOTIFY_CFG = 2
VIRTIO_PCI_CAP_ISR_CFG = 3
VIRTIO_PCI_CAP_DEVICE_CFG = 4
VIRTIO_PCI_CAP_PCI_CFG = 5

# 4.1.4.3 common configuration structure (struct virtio_pci_common_cfg)
COMMON_CFG = Layout("virtio_pci_common_cfg", 56, [
    ("device_feature_select", 0, 4), ("device_feature", 4, 4),
    ("driver_feature_select", 8, 4), ("driver_feature", 12, 4),
    ("config_msix_vector", 16, 2), ("num_queues", 18, 2),
    ("device_status", 20, 1), ("config_generation", 21, 1),
    ("queue_select", 22, 2), ("queue_size", 24, 2), ("queue_msix_vector", 26, 2),
    ("queue_enable", 28, 2), ("queue_notify_off", 30, 2),
    ("queue_desc", 32, 8), ("queue_driver", 40, 8), ("queue_device", 48, 8),
])
COMMON = COMMON_CFG.offsets
VIRTIO_MSI_NO_VECTOR = 0xFFFF

# 2.1 device status field
ACKNOWLEDGE = 1
DRIVER = 2
DRIVER_OK = 4
FEATURES_OK = 8
DEVICE_NEEDS_RESET = 64
FAILED = 128

# 4.1.4.5 ISR status
VIRTIO_PCI_ISR_QUEUE = 1
VIRTIO_PCI_ISR_CONFIG = 2

# feature bits (5.1.3, 6)
VIRTIO_NET_F_CSUM = 0
VIRTIO_NET_F_GUEST_CSUM = 1
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_GUEST_TSO4 = 7
VIRTIO_NET_F_GUEST_ECN = 9      # TSO packets with ECN (CWR) in: neither offered nor asked for
VIRTIO_NET_F_HOST_TSO4 = 11
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_NET_F_STATUS = 16
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
VIRTIO_NET_F_STANDBY = 62       # 5.1.3: acts as a standby for a primary device with the same MAC

# 2.6.5 descriptor table
VIRTQ_DESC = Layout("virtq_desc", 16, [("addr", 0, 8), ("len", 8, 4), ("flags", 12, 2), ("next", 14, 2)])
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
# 2.6.6 available ring: flags, idx, ring[size], used_event
VIRTQ_AVAIL_FLAGS = 0
VIRTQ_AVAIL_IDX = 2
VIRTQ_AVAIL_RING = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
# 2.6.8 used ring: flags, idx, ring[size] of virtq_used_elem, avail_event
VIRTQ_USED_FLAGS = 0
VIRTQ_USED_IDX = 2
VIRTQ_USED_RING = 4
VIRTQ_USED_ELEM = Layout("virtq_used_elem", 8, [("id", 0, 4), ("len", 4, 4)])
VIRTQ_USED_F_NO_NOTIFY = 1
U16 = Layout("le16", 2, [("v", 0, 2)]).struct


def avail_size(qsize: int) -> int:
    return VIRTQ_AVAIL_RING + 2 * qsize + 2


def used_size(qsize: int) -> int:
    return VIRTQ_USED_RING + 8 * qsize + 2


def used_event_offset(qsize: int) -> int:
    """used_event sits after the avail ring (2.6.10)."""
    return VIRTQ_AVAIL_RING + 2 * qsize


def avail_event_offset(qsize: int) -> int:
    """avail_event sits after the used ring (2.6.10)."""
    return VIRTQ_USED_RING + 8 * qsize


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """2.6.10.2: notify iff event_idx lies in [old_idx, new_idx), modulo 2^16."""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old_idx) & 0xFFFF


# 5.1.6 struct virtio_net_hdr (with VIRTIO_F_VERSION_1: always 12 bytes, num_buffers present)
NET_HDR = Layout("virtio_net_hdr", 12, [
    ("flags", 0, 1), ("gso_type", 1, 1), ("hdr_len", 2, 2), ("gso_size", 4, 2),
    ("csum_start", 6, 2), ("csum_offset", 8, 2), ("num_buffers", 10, 2),
])
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1     # 5.1.6: checksum from csum_start, stored at csum_start + csum_offset
VIRTIO_NET_HDR_F_DATA_VALID = 2     # 5.1.6.3: the device validated the checksum
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
# 5.1.4 struct virtio_net_config
NET_CONFIG = Layout("virtio_net_config", 12, [("status", 6, 2), ("max_virtqueue_pairs", 8, 2), ("mtu", 10, 2)])
NET_CONFIG_MAC = 0
VIRTIO_NET_S_LINK_UP = 1
RX_QUEUE, TX_QUEUE = 0, 1       # 5.1.2: receiveq1, transmitq1

# QEMU virtio-pci layout of the modern BAR (hw/virtio/virtio-pci.c)
MODERN_BAR = 4
MODERN_BAR_SIZE = 0x4000
COMMON_OFFSET, ISR_OFFSET, DEVICE_OFFSET, NOTIFY_OFFSET = 0x0000, 0x1000, 0x2000, 0x3000
REGION_SIZE = 0x1000
NOTIFY_MULTIPLIER = 4
MSIX_BAR = 1
MSIX_BAR_SIZE = 0x1000
MSIX_PBA_OFFSET = 0x800
QUEUE_SIZE_MAX = 256
