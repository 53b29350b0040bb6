"""Hyper-V's SynIC and VMBus as data: the synthetic interrupt controller's
MSRs, message and event-flag pages (Hyper-V TLFS 6.0, chapter 11 "Inter-
Partition Communication"), the hypercalls that post messages and signal
events (TLFS appendix A), the VMBus channel messages (Linux
``include/linux/hyperv.h``) and the ring buffer pair of a channel with its
packet descriptors (``hyperv.h``, ``drivers/hv/ring_buffer.c``).

The ring is read and written by the guest's vmbus driver and by the root's
VSPs alike, each through its own view of the same pages; the algorithms
below (write with the previous-index trailer, read with bounds checks, the
two signalling rules) are used by both sides."""

from __future__ import annotations

import struct

from .fields import Layout

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
U16, U32, U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")

# ---- SynIC (TLFS 11.8, 11.9) --------------------------------------------------------------
HV_X64_MSR_SCONTROL = 0x40000080
HV_X64_MSR_SIEFP = 0x40000082       # event flags page: GPA[63:12], enable bit 0
HV_X64_MSR_SIMP = 0x40000083        # message page: GPA[63:12], enable bit 0
HV_X64_MSR_EOM = 0x40000084
HV_X64_MSR_SINT0 = 0x40000090       # SINT0..15: vector [7:0], masked bit 16, auto-EOI bit 17
HV_SYNIC_SINT_COUNT = 16
HV_SYNIC_SINT_MASKED = 1 << 16
HV_SYNIC_SINT_AUTO_EOI = 1 << 17
HV_SYNIC_SIMP_ENABLE = HV_SYNIC_SIEFP_ENABLE = 1
HV_MESSAGE_SIZE = 256
HV_MESSAGE_PAYLOAD_BYTE_COUNT = 240
HV_EVENT_FLAGS_COUNT = 256 * 8      # flags per SINT: 256 bytes of the event flags page
# struct hv_message: header {message_type, payload_size, message_flags (bit 0 msg_pending), reserved, port/sender}
HV_MESSAGE_HEADER = Layout("hv_message_header", 16, [
    ("message_type", 0, 4), ("payload_size", 4, 1), ("message_flags", 5, 1), ("sender", 8, 8)])
HV_MESSAGE_TYPE = HV_MESSAGE_HEADER.offset("message_type")
HV_MESSAGE_FLAGS = HV_MESSAGE_HEADER.offset("message_flags")
HV_MESSAGE_PAYLOAD = HV_MESSAGE_HEADER.size
HVMSG_NONE = 0
HV_MSG_PENDING = 1 << 0
VMBUS_MESSAGE_TYPE = 1              # what vmbus_post_msg passes hv_post_message
VMBUS_MESSAGE_SINT = 2              # VMBUS_MESSAGE_SINT: messages and channel events to the guest
VMBUS_MESSAGE_CONNECTION_ID_4 = 4   # the host's message port from VERSION_WIN10 on

# ---- hypercalls (TLFS appendix A, 3.7 hypercall status codes) ---------------------------------
HVCALL_POST_MESSAGE = 0x005C
HVCALL_SIGNAL_EVENT = 0x005D
HV_STATUS_SUCCESS = 0
HV_STATUS_INVALID_HYPERCALL_INPUT = 3
HV_STATUS_INVALID_ALIGNMENT = 4
HV_STATUS_INVALID_PARAMETER = 5
HV_STATUS_INVALID_PORT_ID = 17
HV_STATUS_INVALID_CONNECTION_ID = 18
HV_STATUS_INSUFFICIENT_BUFFERS = 19
# HvPostMessage input page: ConnectionId, reserved, MessageType, PayloadSize, Payload[240]
HV_INPUT_POST_MESSAGE = Layout("hv_input_post_message", 16, [
    ("connectionid", 0, 4), ("message_type", 8, 4), ("payload_size", 12, 4)])
# HvSignalEvent input (a fast hypercall's one register): ConnectionId[23:0], FlagNumber at bit 32
HV_CONNECTION_ID_MASK = 0xFFFFFF
HV_SIGNAL_FLAG_SHIFT = 32
HV_MAX_QUEUED_MESSAGES = 16         # messages a port queues behind a busy slot (HvPostMessage then fails)

# ---- VMBus channel messages (hyperv.h enum vmbus_channel_message_type) ------------------------
CHANNELMSG_OFFERCHANNEL = 1
CHANNELMSG_RESCIND_CHANNELOFFER = 2
CHANNELMSG_REQUESTOFFERS = 3
CHANNELMSG_ALLOFFERS_DELIVERED = 4
CHANNELMSG_OPENCHANNEL = 5
CHANNELMSG_OPENCHANNEL_RESULT = 6
CHANNELMSG_CLOSECHANNEL = 7
CHANNELMSG_GPADL_HEADER = 8
CHANNELMSG_GPADL_BODY = 9
CHANNELMSG_GPADL_CREATED = 10
CHANNELMSG_GPADL_TEARDOWN = 11
CHANNELMSG_GPADL_TORNDOWN = 12
CHANNELMSG_INITIATE_CONTACT = 14
CHANNELMSG_VERSION_RESPONSE = 15
VERSION_WIN10_V5 = (5 << 16) | 0    # VERSION_WIN10_V5: the message connection id is 4
CHANNEL_HEADER = Layout("vmbus_channel_message_header", 8, [("msgtype", 0, 4)])
INITIATE_CONTACT = Layout("vmbus_channel_initiate_contact", 40, [
    ("msgtype", 0, 4), ("vmbus_version_requested", 8, 4), ("target_vcpu", 12, 4), ("msg_sint", 16, 1),
    ("monitor_page1", 24, 8), ("monitor_page2", 32, 8)])
VERSION_RESPONSE = Layout("vmbus_channel_version_response", 16, [
    ("msgtype", 0, 4), ("version_supported", 8, 1), ("connection_state", 9, 1), ("msg_conn_id", 12, 4)])
# vmbus_channel_offer_channel: the offer (if_type, if_instance GUIDs ... sub_channel_index), then the relid
OFFER_CHANNEL = Layout("vmbus_channel_offer_channel", 196, [
    ("msgtype", 0, 4), ("if_type_lo", 8, 8), ("if_type_hi", 16, 8), ("if_instance_lo", 24, 8),
    ("if_instance_hi", 32, 8), ("sub_channel_index", 180, 2), ("child_relid", 184, 4), ("monitorid", 188, 1),
    ("monitor_allocated", 189, 1), ("is_dedicated_interrupt", 190, 2), ("connection_id", 192, 4)])
RESCIND_OFFER = Layout("vmbus_channel_rescind_offer", 12, [("msgtype", 0, 4), ("child_relid", 8, 4)])
OPEN_CHANNEL = Layout("vmbus_channel_open_channel", 148, [
    ("msgtype", 0, 4), ("child_relid", 8, 4), ("openid", 12, 4), ("ringbuffer_gpadlhandle", 16, 4),
    ("target_vp", 20, 4), ("downstream_ringbuffer_pageoffset", 24, 4)])
OPEN_RESULT = Layout("vmbus_channel_open_result", 20, [
    ("msgtype", 0, 4), ("child_relid", 8, 4), ("openid", 12, 4), ("status", 16, 4)])
CLOSE_CHANNEL = Layout("vmbus_channel_close_channel", 12, [("msgtype", 0, 4), ("child_relid", 8, 4)])
# vmbus_channel_gpadl_header, then struct gpa_range {byte_count, byte_offset, pfn_array[]}
GPADL_HEADER = Layout("vmbus_channel_gpadl_header", 28, [
    ("msgtype", 0, 4), ("child_relid", 8, 4), ("gpadl", 12, 4), ("range_buflen", 16, 2), ("rangecount", 18, 2),
    ("byte_count", 20, 4), ("byte_offset", 24, 4)])
GPADL_BODY = Layout("vmbus_channel_gpadl_body", 16, [("msgtype", 0, 4), ("msgnumber", 8, 4), ("gpadl", 12, 4)])
GPADL_CREATED = Layout("vmbus_channel_gpadl_created", 20, [
    ("msgtype", 0, 4), ("child_relid", 8, 4), ("gpadl", 12, 4), ("creation_status", 16, 4)])
GPADL_TEARDOWN = Layout("vmbus_channel_gpadl_teardown", 16, [("msgtype", 0, 4), ("child_relid", 8, 4),
                                                             ("gpadl", 12, 4)])
GPADL_TORNDOWN = Layout("vmbus_channel_gpadl_torndown", 12, [("msgtype", 0, 4), ("gpadl", 8, 4)])
GPA_RANGE_HEADER = 8                # byte_count, byte_offset before the pfns
PFNS_IN_HEADER = (HV_MESSAGE_PAYLOAD_BYTE_COUNT - GPADL_HEADER.size) // 8
PFNS_IN_BODY = (HV_MESSAGE_PAYLOAD_BYTE_COUNT - GPADL_BODY.size) // 8
MAX_GPADL_PAGES = 8192              # pages one GPADL may describe here (32 MiB, the largest netvsc buffer 16 MiB)
# Each a GUID's two halves as little-endian u64s: HV_NIC_GUID f8615163-df3e-46c5-913f-f2d2f965ed0e
HV_NIC_GUID = (0x46C5DF3EF8615163, 0x0EED65F9D2F23F91)

# ---- monitored notification facility (TLFS "Monitored Notifications", hyperv.h struct hv_monitor_page) ----
# The child's second monitor page (monitor_page2 of INITIATE_CONTACT): a channel's send sets bit
# monitorid % 32 of trigger_group[monitorid / 32].pending; the hypervisor scans the enabled groups
# (trigger_state bits 3:0) about every latency[group][bit] (100 ns units) and signals parameter[group][bit]
# (connection id, flag number) as HvSignalEvent would.  Page layout: trigger_state, rsvd, trigger_group[4]
# {pending, armed}, rsvd[3], next_checktime[4][32] (s32), latency[4][32] (u16), rsvd[32] (u64),
# parameter[4][32] {connectionid, flagnumber, rsvd}, rsvd to the end of the page.
HV_MONITOR_GROUPS, HV_MONITOR_BITS = 4, 32
HV_MONITOR_IDS = HV_MONITOR_GROUPS * HV_MONITOR_BITS
HV_MONITOR_TRIGGER_GROUP = Layout("hv_monitor_trigger_group", 8, [("pending", 0, 4), ("armed", 4, 4)])
HV_MONITOR_PARAMETER = Layout("hv_monitor_parameter", 8, [("connectionid", 0, 4), ("flagnumber", 4, 2)])
MONITOR_TRIGGER_STATE = 0
MONITOR_TRIGGER_GROUPS = 8
MONITOR_LATENCY = MONITOR_TRIGGER_GROUPS + HV_MONITOR_GROUPS * 8 + 3 * 8 + HV_MONITOR_IDS * 4      # 576
MONITOR_PARAMETERS = MONITOR_LATENCY + HV_MONITOR_IDS * 2 + 32 * 8                                # 1088
MONITOR_GROUP_ENABLE = (1 << HV_MONITOR_GROUPS) - 1
HV_MONITOR_LATENCY_UNIT_NS = 100
# What the host writes in latency[][] for a channel it monitors.  No public figure gives Hyper-V's
# default; 100 (10 us) is an assumption, between a timer tick of the hypervisor and the "increased
# latency" Linux's low_latency mode (channel->low_latency, vmbus_setevent) exists to avoid.
HV_MONITOR_DEFAULT_LATENCY = 100

# ---- ring buffer (hyperv.h struct hv_ring_buffer, ring_buffer.c) --------------------------------
HV_RING_BUFFER = Layout("hv_ring_buffer", PAGE_SIZE, [
    ("write_index", 0, 4), ("read_index", 4, 4), ("interrupt_mask", 8, 4), ("pending_send_sz", 12, 4),
    ("feature_bits", 64, 4)])
WRITE_INDEX, READ_INDEX = HV_RING_BUFFER.offset("write_index"), HV_RING_BUFFER.offset("read_index")
INTERRUPT_MASK, PENDING_SEND_SZ = HV_RING_BUFFER.offset("interrupt_mask"), HV_RING_BUFFER.offset("pending_send_sz")
FEATURE_BITS = HV_RING_BUFFER.offset("feature_bits")
FEAT_PENDING_SEND_SZ = 1 << 0
RING_DATA = PAGE_SIZE               # the data area follows the header page
VMPACKET_DESCRIPTOR = Layout("vmpacket_descriptor", 16, [
    ("type", 0, 2), ("offset8", 2, 2), ("len8", 4, 2), ("flags", 6, 2), ("trans_id", 8, 8)])
PREV_INDICES = 8                    # the u64 after each packet: the write index it started at, << 32
VM_PKT_DATA_INBAND = 6
VM_PKT_DATA_USING_XFER_PAGES = 7
VM_PKT_DATA_USING_GPA_DIRECT = 9
VM_PKT_COMP = 11
VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED = 1
# vmtransfer_page_packet_header after the descriptor: xfer_pageset_id, sender_owns_set, range_cnt, ranges[]
XFER_PAGE_HEADER = Layout("vmtransfer_page_packet_header", 16, [
    ("xfer_pageset_id", 0, 2), ("sender_owns_set", 2, 1), ("range_cnt", 4, 4), ("byte_count", 8, 4),
    ("byte_offset", 12, 4)])
# vmbus_channel_packet_page_buffer after the descriptor: reserved, rangecount, then hv_page_buffer {len, offset, pfn}
GPA_DIRECT_HEADER = Layout("vmbus_channel_packet_page_buffer", 8, [("reserved", 0, 4), ("rangecount", 4, 4)])
HV_PAGE_BUFFER = Layout("hv_page_buffer", 16, [("len", 0, 4), ("offset", 4, 4), ("pfn", 8, 8)])
_DESC = VMPACKET_DESCRIPTOR.struct


class RingError(Exception):
    """The other side broke the ring protocol (an index past the ring, a
    packet longer than what is there): the channel cannot be trusted again."""


def align8(n: int) -> int:
    return (n + 7) & ~7


def ring_indices(ring, size: int) -> tuple[int, int]:
    """write_index, read_index as the other side left them; an index past the
    data area or off the 8-byte grid is a broken ring (hv_ringbuffer_read's
    and the host's checks of a guest-written index)."""
    write, read = ring.get32(WRITE_INDEX), ring.get32(READ_INDEX)
    if write >= size or read >= size or (write | read) & 7:
        raise RingError(f"ring index past the ring or unaligned (write {write}, read {read}, size {size})")
    return write, read


def bytes_to_write(write: int, read: int, size: int) -> int:
    """hv_get_bytes_to_write."""
    return read - write if read > write else size - (write - read)


def ring_write(ring, size: int, parts: list[bytes]) -> tuple[bool, bool]:
    """hv_ringbuffer_write: a packet (descriptor and payload, ``parts``) at the
    write index, padded to 8 bytes, then the previous-indices trailer; the
    writer never fills the ring to the last byte.  Returns (written, signal):
    signal when the reader has not masked interrupts and found the ring
    empty before this packet (hv_signal_on_write)."""
    write, read = ring_indices(ring, size)
    length = sum(map(len, parts))
    total = align8(length) + PREV_INDICES
    if bytes_to_write(write, read, size) <= total:
        return False, False
    at = write
    for part in parts + [bytes(align8(length) - length), U64.pack(write << 32)]:
        at = _copy_to(ring, size, at, part)
    ring.put32(WRITE_INDEX, at)
    return True, not ring.get32(INTERRUPT_MASK) and write == ring.get32(READ_INDEX)


def _copy_to(ring, size: int, at: int, data: bytes) -> int:
    first = min(len(data), size - at)
    ring.write(RING_DATA + at, data[:first])
    if first < len(data):
        ring.write(RING_DATA, data[first:])
    return (at + len(data)) % size


def _copy_from(ring, size: int, at: int, length: int) -> bytes:
    first = min(length, size - at)
    data = ring.read(RING_DATA + at, first)
    return data + ring.read(RING_DATA, length - first) if first < length else data


def ring_peek(ring, size: int, start: int) -> tuple[tuple, bytes, int] | None:
    """hv_pkt_iter_first/next from private read index ``start``: the packet
    there as (descriptor fields, whole packet, next index), or None when the
    writer has published nothing more.  A descriptor whose length runs past
    what was written, or whose payload offset lies outside it, breaks the ring."""
    write, _ = ring_indices(ring, size)
    if start >= size or start & 7:
        raise RingError(f"read position {start} outside the ring")
    avail = write - start if write >= start else size - start + write
    if avail < VMPACKET_DESCRIPTOR.size:
        if avail:
            raise RingError(f"{avail} bytes in the ring, less than a packet descriptor")
        return None
    desc = _DESC.unpack(_copy_from(ring, size, start, VMPACKET_DESCRIPTOR.size))
    length, offset = desc[2] << 3, desc[1] << 3
    if length < VMPACKET_DESCRIPTOR.size or offset < VMPACKET_DESCRIPTOR.size or offset > length \
            or length + PREV_INDICES > avail:
        raise RingError(f"packet of {length} bytes (payload at {offset}) with {avail} bytes in the ring")
    return desc, _copy_from(ring, size, start, length), (start + length + PREV_INDICES) % size


def ring_commit_read(ring, size: int, new_read: int) -> bool:
    """hv_pkt_iter_close: publish the read index; returns whether to signal
    the writer, waiting on pending_send_sz for room it now has
    (hv_pkt_iter_close's crossing test: before < pending <= after)."""
    write, old = ring_indices(ring, size)
    ring.put32(READ_INDEX, new_read)
    pending = ring.get32(PENDING_SEND_SZ)
    if not pending or not ring.get32(FEATURE_BITS) & FEAT_PENDING_SEND_SZ:
        return False
    return bytes_to_write(write, old, size) < pending <= bytes_to_write(write, new_read, size)


def begin_read(ring) -> None:
    """hv_begin_read: the reader polls; the writer need not signal."""
    ring.put32(INTERRUPT_MASK, 1)


def end_read(ring, size: int, read: int) -> bool:
    """hv_end_read: unmask, then look again; True when packets arrived meanwhile."""
    ring.put32(INTERRUPT_MASK, 0)
    write, _ = ring_indices(ring, size)
    return write != read


def packet(ptype: int, trans_id: int, payload: bytes, flags: int = 0, header: bytes = b"") -> list[bytes]:
    """A packet's descriptor and body: ``header`` (an xfer-page header) between
    the descriptor and the 8-aligned payload offset, as vmbus_sendpacket lays it out."""
    offset = VMPACKET_DESCRIPTOR.size + len(header)
    length = offset + len(payload)
    return [_DESC.pack(ptype, offset >> 3, align8(length) >> 3, flags, trans_id), header, payload]


def _bits(value: int, base: int = 0) -> list[int]:
    """The numbers of the set bits of ``value``, lowest first, each plus ``base``."""
    out = []
    while value:
        low = value & -value
        out.append(base + low.bit_length() - 1)
        value ^= low
    return out


def take_event_flags(mem, siefp: int, sint: int) -> list[int]:
    """The receiving side's scan of one SINT's event flags (vmbus_chan_sched,
    sync_test_and_clear_bit on each): every set flag, all cleared."""
    at = siefp + sint * (HV_EVENT_FLAGS_COUNT // 8)
    value = int.from_bytes(mem.buf[at: at + HV_EVENT_FLAGS_COUNT // 8], "little")
    if value:
        mem.write(at, bytes(HV_EVENT_FLAGS_COUNT // 8))
    return _bits(value)


def monitor_arm(mem, page: int, monitorid: int, connection: int, latency: int) -> None:
    """The host's set-up of one monitored channel in the child's page: its parameter (the
    connection HvSignalEvent would name, flag 0), its latency, its group enabled."""
    group = monitorid // HV_MONITOR_BITS
    mem.write(page + MONITOR_PARAMETERS + monitorid * HV_MONITOR_PARAMETER.size,
              HV_MONITOR_PARAMETER.pack(connection, 0))
    mem.store(U16, page + MONITOR_LATENCY + monitorid * 2, latency)
    mem.store(U32, page + MONITOR_TRIGGER_STATE, U32.unpack_from(mem.buf, page)[0] | 1 << group)


def monitor_set_pending(mem, page: int, monitorid: int) -> None:
    """vmbus_setevent's sync_set_bit of the channel's bit in its trigger group's pending word."""
    at = page + MONITOR_TRIGGER_GROUPS + monitorid // HV_MONITOR_BITS * HV_MONITOR_TRIGGER_GROUP.size
    mem.store(U32, at, U32.unpack_from(mem.buf, at)[0] | 1 << monitorid % HV_MONITOR_BITS)


def monitor_pending(mem, page: int, take: bool = False) -> list[int]:
    """The monitor ids pending in the enabled trigger groups; ``take`` clears those groups'
    pending words (the hypervisor's scan, an atomic exchange each)."""
    enabled = U32.unpack_from(mem.buf, page + MONITOR_TRIGGER_STATE)[0] & MONITOR_GROUP_ENABLE
    ids = []
    for group in _bits(enabled):
        at = page + MONITOR_TRIGGER_GROUPS + group * HV_MONITOR_TRIGGER_GROUP.size
        pending = U32.unpack_from(mem.buf, at)[0]
        if pending and take:
            mem.store(U32, at, 0)
        ids += _bits(pending, group * HV_MONITOR_BITS)
    return ids


def monitor_parameter(mem, page: int, monitorid: int) -> tuple[int, int, int]:
    """parameter[group][bit] and latency[group][bit] of one monitor id: (connection id, flag number, latency)."""
    connection, flag = HV_MONITOR_PARAMETER.unpack_from(mem.buf, page + MONITOR_PARAMETERS
                                                        + monitorid * HV_MONITOR_PARAMETER.size)
    return connection, flag, U16.unpack_from(mem.buf, page + MONITOR_LATENCY + monitorid * 2)[0]


def take_messages(mem, simp: int, sint: int, eom) -> list[tuple[int, bytes]]:
    """The receiving side's handling of one SINT's message slot
    (vmbus_on_msg_dpc, vmbus_signal_eom): take the message, free the slot
    (message_type 0), and ``eom()`` (the EOM MSR write) when another is
    pending; again until the slot is empty.  Each as (sender port, payload)."""
    out = []
    slot = simp + sint * HV_MESSAGE_SIZE
    while True:
        mtype, size, flags, sender = HV_MESSAGE_HEADER.unpack_from(mem.buf, slot)
        if mtype == HVMSG_NONE:
            return out
        out.append((sender, mem.read(slot + HV_MESSAGE_PAYLOAD, min(size, HV_MESSAGE_PAYLOAD_BYTE_COUNT))))
        mem.write(slot, bytes(4))
        if not flags & HV_MSG_PENDING:
            return out
        eom()
