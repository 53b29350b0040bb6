"""Xen's public headers as data: grant tables (``grant_table.h``), event
channels and the 2-level shared-info bitmaps (``event_channel.h``,
``xen.h``), shared rings (``io/ring.h``), the network interface
(``io/netif.h``) and xenbus states (``io/xenbus.h``).  x86-64 layouts:
``xen_pfn_t`` and ``xen_ulong_t`` are 64 bits wide.

``io/ring.h`` is macros over the shared page; the three that decide
notifications are functions here, used by netfront and netback alike."""

from __future__ import annotations

import struct

from .fields import Layout

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
DOMID_SELF = 0x7FF0
U16, U32, U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
I16 = struct.Struct("<h")

# ---- grant_table.h ---------------------------------------------------------------
GRANT_ENTRY_V1 = Layout("grant_entry_v1", 8, [("flags", 0, 2), ("domid", 2, 2), ("frame", 4, 4)])
GRANT_ENTRY_FLAGS = GRANT_ENTRY_V1.field_struct("flags")
GRANT_ENTRIES_PER_FRAME = PAGE_SIZE // GRANT_ENTRY_V1.size
GNTTAB_NR_RESERVED_ENTRIES = 8      # refs 0-7: toolstack (xenstore, console)
GTF_invalid = 0
GTF_permit_access = 1
GTF_accept_transfer = 2
GTF_type_mask = 3
GTF_readonly = 1 << 2               # the grantee may only read
GTF_reading = 1 << 3                # set by Xen while the grantee reads the frame
GTF_writing = 1 << 4                # set by Xen while the grantee writes it

GNTTABOP_map_grant_ref = 0
GNTTABOP_unmap_grant_ref = 1
GNTTABOP_setup_table = 2
GNTTABOP_copy = 5
GNTMAP_readonly = 1 << 2

# struct gnttab_copy: source and dest are struct gnttab_copy_ptr
# {union {grant_ref_t ref; xen_pfn_t gmfn;} u; domid_t domid; uint16_t offset;}
GNTTAB_COPY = Layout("gnttab_copy", 40, [
    ("source_u", 0, 8), ("source_domid", 8, 2), ("source_offset", 10, 2),
    ("dest_u", 16, 8), ("dest_domid", 24, 2), ("dest_offset", 26, 2),
    ("len", 32, 2), ("flags", 34, 2), ("status", 36, 2),
])
GNTTAB_COPY_STATUS = GNTTAB_COPY.offset("status")
GNTCOPY_source_gref = 1 << 0
GNTCOPY_dest_gref = 1 << 1

GNTST_okay = 0
GNTST_general_error = -1
GNTST_bad_domain = -2
GNTST_bad_gntref = -3
GNTST_bad_handle = -4
GNTST_bad_virt_addr = -5
GNTST_bad_dev_addr = -6
GNTST_no_device_space = -7
GNTST_permission_denied = -8
GNTST_bad_page = -9
GNTST_bad_copy_arg = -10
GNTST_address_too_big = -11
GNTST_eagain = -12

# ---- event_channel.h, xen.h (2-level ABI) ------------------------------------------
EVTCHNOP_bind_interdomain = 0
EVTCHNOP_close = 3
EVTCHNOP_send = 4
EVTCHNOP_alloc_unbound = 6
EVTCHNOP_unmask = 9
XEN_LEGACY_MAX_VCPUS = 32
BITS_PER_EVTCHN_WORD = 64
EVTCHN_2L_NR_CHANNELS = BITS_PER_EVTCHN_WORD * BITS_PER_EVTCHN_WORD
VCPU_INFO = Layout("vcpu_info", 64, [
    ("evtchn_upcall_pending", 0, 1), ("evtchn_upcall_mask", 1, 1), ("evtchn_pending_sel", 8, 8),
])
SHARED_INFO_EVTCHN_PENDING = XEN_LEGACY_MAX_VCPUS * VCPU_INFO.size      # xen_ulong_t[64]
SHARED_INFO_EVTCHN_MASK = SHARED_INFO_EVTCHN_PENDING + 8 * BITS_PER_EVTCHN_WORD
UPCALL_PENDING = VCPU_INFO.offset("evtchn_upcall_pending")
PENDING_SEL = VCPU_INFO.offset("evtchn_pending_sel")


def evtchn_2l_take(buf, shared_info: int, vcpu: int = 0) -> list[int]:
    """The kernel's half of the 2-level ABI (Linux events_2l.c): clear
    evtchn_upcall_pending, exchange evtchn_pending_sel for 0, then take every
    pending and unmasked port of the selected words, clearing its pending bit
    (the ack of an edge event).  Masked ports stay pending."""
    info = shared_info + vcpu * VCPU_INFO.size
    buf[info + UPCALL_PENDING] = 0
    sel = U64.unpack_from(buf, info + PENDING_SEL)[0]
    U64.pack_into(buf, info + PENDING_SEL, 0)
    ports = []
    while sel:
        word = (sel & -sel).bit_length() - 1
        sel &= sel - 1
        at = shared_info + SHARED_INFO_EVTCHN_PENDING + 8 * word
        pending = U64.unpack_from(buf, at)[0]
        ready = pending & ~U64.unpack_from(buf, shared_info + SHARED_INFO_EVTCHN_MASK + 8 * word)[0]
        U64.pack_into(buf, at, pending & ~ready)
        while ready:
            bit = (ready & -ready).bit_length() - 1
            ready &= ready - 1
            ports.append(word * BITS_PER_EVTCHN_WORD + bit)
    return ports

# __HYPERVISOR_* numbers and the XENMEM_add_to_physmap spaces used here
HYPERVISOR_memory_op = 12
HYPERVISOR_grant_table_op = 20
HYPERVISOR_event_channel_op = 32
HYPERVISOR_hvm_op = 34
XENMAPSPACE_shared_info = 0
XENMAPSPACE_grant_table = 1
HVMOP_set_evtchn_upcall_vector = 23

# ---- io/ring.h -----------------------------------------------------------------------
SRING = Layout("sring", 64, [("req_prod", 0, 4), ("req_event", 4, 4), ("rsp_prod", 8, 4), ("rsp_event", 12, 4)])
REQ_PROD, REQ_EVENT = SRING.offset("req_prod"), SRING.offset("req_event")
RSP_PROD, RSP_EVENT = SRING.offset("rsp_prod"), SRING.offset("rsp_event")
RING_OFFSET = SRING.size            # ring[] follows the header and __pad[48]
RING_IDX_MASK = 0xFFFFFFFF


def ring_size(entry_size: int) -> int:
    """RING_SIZE: entries of the union that fit the page, rounded down to a power of two (__RD32)."""
    n = (PAGE_SIZE - RING_OFFSET) // entry_size
    return 1 << (n.bit_length() - 1)


def shared_ring_init(buf, base: int) -> None:
    """SHARED_RING_INIT: producers 0, events 1 (the first request and response notify)."""
    SRING.pack_into(buf, base, 0, 1, 0, 1)


def push_and_check_notify(buf, base: int, prod_off: int, event_off: int, new: int) -> bool:
    """RING_PUSH_{REQUESTS,RESPONSES}_AND_CHECK_NOTIFY: publish ``new`` as the
    producer index; notify if the consumer's event index lies in (old, new]."""
    old = U32.unpack_from(buf, base + prod_off)[0]
    U32.pack_into(buf, base + prod_off, new & RING_IDX_MASK)
    event = U32.unpack_from(buf, base + event_off)[0]
    return (new - event) & RING_IDX_MASK < (new - old) & RING_IDX_MASK


def final_check(buf, base: int, prod_off: int, event_off: int, cons: int) -> bool:
    """RING_FINAL_CHECK_FOR_{REQUESTS,RESPONSES}: with nothing left to consume,
    ask for a notification at the next entry (event = cons + 1), then look again."""
    if U32.unpack_from(buf, base + prod_off)[0] != cons & RING_IDX_MASK:
        return True
    U32.pack_into(buf, base + event_off, (cons + 1) & RING_IDX_MASK)
    return U32.unpack_from(buf, base + prod_off)[0] != cons & RING_IDX_MASK


# ---- io/netif.h ----------------------------------------------------------------------
NETIF_TX_REQUEST = Layout("netif_tx_request", 12, [
    ("gref", 0, 4), ("offset", 4, 2), ("flags", 6, 2), ("id", 8, 2), ("size", 10, 2)])
NETIF_TX_RESPONSE = Layout("netif_tx_response", 4, [("id", 0, 2), ("status", 2, 2)])
NETIF_RX_REQUEST = Layout("netif_rx_request", 8, [("id", 0, 2), ("gref", 4, 4)])
NETIF_RX_RESPONSE = Layout("netif_rx_response", 8, [("id", 0, 2), ("offset", 2, 2), ("flags", 4, 2), ("status", 6, 2)])
TX_ENTRY = max(NETIF_TX_REQUEST.size, NETIF_TX_RESPONSE.size)    # union netif_tx_sring_entry
RX_ENTRY = max(NETIF_RX_REQUEST.size, NETIF_RX_RESPONSE.size)
NET_TX_RING_SIZE = ring_size(TX_ENTRY)
NET_RX_RING_SIZE = ring_size(RX_ENTRY)
TX_RESPONSE = struct.Struct("<Hh")                               # netif_tx_response with a signed status
RX_RESPONSE = struct.Struct("<HHHh")                             # netif_rx_response with a signed status

NETTXF_csum_blank = 1 << 0
NETTXF_data_validated = 1 << 1
NETTXF_more_data = 1 << 2
NETTXF_extra_info = 1 << 3
NETRXF_data_validated = 1 << 0
NETRXF_csum_blank = 1 << 1
NETRXF_more_data = 1 << 2
NETRXF_extra_info = 1 << 3

# struct netif_extra_info: a request or response slot holding metadata for
# the packet in the slots around it (NETTXF_extra_info / NETRXF_extra_info);
# the gso member of its union.
NETIF_EXTRA_INFO = Layout("netif_extra_info", 8, [
    ("type", 0, 1), ("flags", 1, 1), ("gso_size", 2, 2), ("gso_type", 4, 1), ("gso_pad", 5, 1),
    ("gso_features", 6, 2)])
XEN_NETIF_EXTRA_TYPE_NONE = 0
XEN_NETIF_EXTRA_TYPE_GSO = 1
XEN_NETIF_EXTRA_TYPE_MAX = 6        # after MCAST_ADD 2, MCAST_DEL 3, HASH 4, XDP 5
XEN_NETIF_EXTRA_FLAG_MORE = 1 << 0
XEN_NETIF_GSO_TYPE_TCPV4 = 1
XEN_NETIF_GSO_TYPE_TCPV6 = 2
# XEN_NETIF_NR_SLOTS_MIN: the slots a packet may take that every backend
# accepts (the historical MAX_SKB_FRAGS of 18); netback's
# XEN_NETBK_LEGACY_SLOTS_MAX, netfront's MAX_XEN_SKB_FRAGS + 1
XEN_NETIF_NR_SLOTS_MIN = 18
XEN_NETIF_MAX_TX_SIZE = 0xFFFF      # a packet's size is the first request's 16-bit size field

NETIF_RSP_DROPPED = -2
NETIF_RSP_ERROR = -1
NETIF_RSP_OKAY = 0
NETIF_RSP_NULL = 1

# ---- io/xenbus.h -------------------------------------------------------------------------
XenbusStateUnknown = 0
XenbusStateInitialising = 1
XenbusStateInitWait = 2             # backend: features published, waiting for the frontend
XenbusStateInitialised = 3          # frontend: rings and event channel published
XenbusStateConnected = 4
XenbusStateClosing = 5
XenbusStateClosed = 6
