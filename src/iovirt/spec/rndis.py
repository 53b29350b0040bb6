"""The synthetic NIC's two protocols as data: NVSP, the network VSP's
messages on the VMBus channel (Linux ``drivers/net/hyperv/hyperv_net.h``),
and RNDIS, the messages NVSP carries in its send and receive buffers
(``include/linux/rndis.h``, ``hyperv_net.h``, ``rndis_filter.c``)."""

from __future__ import annotations

from .fields import Layout

# ---- NVSP (hyperv_net.h) -----------------------------------------------------------------
NVSP_MSG_TYPE_INIT = 1
NVSP_MSG_TYPE_INIT_COMPLETE = 2
NVSP_MSG1_TYPE_SEND_NDIS_VER = 100
NVSP_MSG1_TYPE_SEND_RECV_BUF = 101
NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE = 102
NVSP_MSG1_TYPE_SEND_SEND_BUF = 104
NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE = 105
NVSP_MSG1_TYPE_SEND_RNDIS_PKT = 107
NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE = 108
NVSP_MSG2_TYPE_SEND_NDIS_CONFIG = 125
NVSP_STAT_SUCCESS = 1
NVSP_STAT_FAIL = 2
NVSP_PROTOCOL_VERSION_1 = 2
NVSP_PROTOCOL_VERSION_2 = 0x30002
NVSP_PROTOCOL_VERSION_4 = 0x40000
NVSP_PROTOCOL_VERSION_5 = 0x50000
NVSP_PROTOCOL_VERSION_6 = 0x60000
NVSP_PROTOCOL_VERSION_61 = 0x60001
NDIS_VERSION_6_30 = (6, 30)
NETVSC_RECEIVE_BUFFER_ID = 0xCAFE
NETVSC_SEND_BUFFER_ID = 0
NETVSC_INVALID_INDEX = 0xFFFFFFFF
NETVSC_RECV_SECTION_SIZE = 1728     # the host's sub-allocation: one frame and its RNDIS header
NETVSC_SEND_SECTION_SIZE = 6144
RNDIS_CHANNEL_DATA, RNDIS_CHANNEL_CONTROL = 0, 1
NVSP_MESSAGE_SIZE = 40              # sizeof(struct nvsp_message): the header and the largest union member
NVSP_INIT = Layout("nvsp_message_init", 12, [("msg_type", 0, 4), ("min_protocol_ver", 4, 4),
                                             ("max_protocol_ver", 8, 4)])
NVSP_INIT_COMPLETE = Layout("nvsp_message_init_complete", 16, [
    ("msg_type", 0, 4), ("negotiated_protocol_ver", 4, 4), ("max_mdl_chain_len", 8, 4), ("status", 12, 4)])
NVSP_NDIS_VER = Layout("nvsp_1_message_send_ndis_version", 12, [("msg_type", 0, 4), ("ndis_major_ver", 4, 4),
                                                               ("ndis_minor_ver", 8, 4)])
NVSP_NDIS_CONFIG = Layout("nvsp_2_message_send_ndis_config", 20, [("msg_type", 0, 4), ("mtu", 4, 4),
                                                                 ("capability", 12, 8)])
NVSP_SEND_BUF = Layout("nvsp_1_message_send_buffer", 10, [("msg_type", 0, 4), ("gpadl_handle", 4, 4), ("id", 8, 2)])
# SEND_RECV_BUF_COMPLETE: status, num_sections, then one nvsp_1_receive_buffer_section
NVSP_RECV_BUF_COMPLETE = Layout("nvsp_1_message_send_receive_buffer_complete", 28, [
    ("msg_type", 0, 4), ("status", 4, 4), ("num_sections", 8, 4), ("offset", 12, 4), ("sub_alloc_size", 16, 4),
    ("num_sub_allocs", 20, 4), ("end_offset", 24, 4)])
NVSP_SEND_BUF_COMPLETE = Layout("nvsp_1_message_send_send_buffer_complete", 12, [
    ("msg_type", 0, 4), ("status", 4, 4), ("section_size", 8, 4)])
NVSP_RNDIS_PKT = Layout("nvsp_1_message_send_rndis_packet", 16, [
    ("msg_type", 0, 4), ("channel_type", 4, 4), ("send_buf_section_index", 8, 4), ("send_buf_section_size", 12, 4)])
NVSP_RNDIS_PKT_COMPLETE = Layout("nvsp_1_message_send_rndis_packet_complete", 8, [("msg_type", 0, 4),
                                                                                ("status", 4, 4)])
NVSP_TYPE = NVSP_INIT.field_struct("msg_type")

# ---- RNDIS (rndis.h) ---------------------------------------------------------------------
RNDIS_MSG_PACKET = 1
RNDIS_MSG_INIT = 2
RNDIS_MSG_QUERY = 4
RNDIS_MSG_SET = 5
RNDIS_MSG_COMPLETION = 0x80000000
RNDIS_MSG_INIT_C = RNDIS_MSG_INIT | RNDIS_MSG_COMPLETION
RNDIS_MSG_QUERY_C = RNDIS_MSG_QUERY | RNDIS_MSG_COMPLETION
RNDIS_MSG_SET_C = RNDIS_MSG_SET | RNDIS_MSG_COMPLETION
RNDIS_STATUS_SUCCESS = 0
RNDIS_STATUS_FAILURE = 0xC0000001
RNDIS_STATUS_NOT_SUPPORTED = 0xC00000BB
RNDIS_STATUS_INVALID_LENGTH = 0xC0010014
RNDIS_STATUS_INVALID_DATA = 0xC0010015
RNDIS_MAJOR_VERSION, RNDIS_MINOR_VERSION = 1, 0
RNDIS_MEDIUM_802_3 = 0
RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE = 0x00010106
RNDIS_OID_GEN_CURRENT_PACKET_FILTER = 0x0001010E
RNDIS_OID_GEN_MEDIA_CONNECT_STATUS = 0x00010114
RNDIS_OID_802_3_PERMANENT_ADDRESS = 0x01010101
RNDIS_OID_802_3_CURRENT_ADDRESS = 0x01010102
NDIS_PACKET_TYPE_DIRECTED = 0x01
NDIS_PACKET_TYPE_MULTICAST = 0x02
NDIS_PACKET_TYPE_ALL_MULTICAST = 0x04
NDIS_PACKET_TYPE_BROADCAST = 0x08
NDIS_PACKET_TYPE_PROMISCUOUS = 0x20
NDIS_MEDIA_STATE_CONNECTED = 0
# rndis_message: ndis_msg_type, msg_len, then the message; offsets inside it count from its third field
RNDIS_HEADER = Layout("rndis_message", 8, [("ndis_msg_type", 0, 4), ("msg_len", 4, 4)])
RNDIS_BODY = RNDIS_HEADER.size      # where req_id / data_offset's origin lies
RNDIS_INIT_REQUEST = Layout("rndis_initialize_request", 24, [
    ("ndis_msg_type", 0, 4), ("msg_len", 4, 4), ("req_id", 8, 4), ("major_ver", 12, 4), ("minor_ver", 16, 4),
    ("max_xfer_size", 20, 4)])
RNDIS_INIT_COMPLETE = Layout("rndis_initialize_complete", 52, [
    ("ndis_msg_type", 0, 4), ("msg_len", 4, 4), ("req_id", 8, 4), ("status", 12, 4), ("major_ver", 16, 4),
    ("minor_ver", 20, 4), ("dev_flags", 24, 4), ("medium", 28, 4), ("max_pkt_per_msg", 32, 4),
    ("max_xfer_size", 36, 4), ("pkt_alignment_factor", 40, 4), ("af_list_offset", 44, 4), ("af_list_size", 48, 4)])
# rndis_query_request and rndis_set_request share the layout: the information buffer follows
RNDIS_OID_REQUEST = Layout("rndis_query_request", 28, [
    ("ndis_msg_type", 0, 4), ("msg_len", 4, 4), ("req_id", 8, 4), ("oid", 12, 4), ("info_buflen", 16, 4),
    ("info_buf_offset", 20, 4), ("dev_vc_handle", 24, 4)])
RNDIS_QUERY_COMPLETE = Layout("rndis_query_complete", 24, [
    ("ndis_msg_type", 0, 4), ("msg_len", 4, 4), ("req_id", 8, 4), ("status", 12, 4), ("info_buflen", 16, 4),
    ("info_buf_offset", 20, 4)])
RNDIS_SET_COMPLETE = Layout("rndis_set_complete", 16, [("ndis_msg_type", 0, 4), ("msg_len", 4, 4), ("req_id", 8, 4),
                                                       ("status", 12, 4)])
RNDIS_PACKET = Layout("rndis_packet", 44, [
    ("ndis_msg_type", 0, 4), ("msg_len", 4, 4), ("data_offset", 8, 4), ("data_len", 12, 4),
    ("oob_data_offset", 16, 4), ("oob_data_len", 20, 4), ("num_oob_data_elements", 24, 4),
    ("per_pkt_info_offset", 28, 4), ("per_pkt_info_len", 32, 4), ("vc_handle", 36, 4), ("reserved", 40, 4)])
RNDIS_PACKET_HEADER = RNDIS_PACKET.size - RNDIS_BODY      # data_offset of a frame right after the header

# ---- vRSS: sub-channels (NVSP 5) and RSS through RNDIS OIDs (hyperv_net.h, rndis_filter.c) --------
NVSP_MSG5_TYPE_SUBCHANNEL = 133
NVSP_SUBCHANNEL_ALLOCATE = 1
NVSP_SUBCHANNEL_REQUEST = Layout("nvsp_5_subchannel_request", 12, [("msg_type", 0, 4), ("op", 4, 4),
                                                                  ("num_subchannels", 8, 4)])
NVSP_SUBCHANNEL_COMPLETE = Layout("nvsp_5_subchannel_complete", 12, [("msg_type", 0, 4), ("status", 4, 4),
                                                                    ("num_subchannels", 8, 4)])
VRSS_CHANNEL_MAX = 64
VRSS_CHANNEL_DEFAULT = 8            # what netvsc asks for at most (and no more than its CPUs)
OID_GEN_RECEIVE_SCALE_CAPABILITIES = 0x00010203
OID_GEN_RECEIVE_SCALE_PARAMETERS = 0x00010204
NDIS_OBJECT_TYPE_RSS_CAPABILITIES = 0x88
NDIS_OBJECT_TYPE_RSS_PARAMETERS = 0x89
NDIS_RECEIVE_SCALE_CAPABILITIES_REVISION_2 = NDIS_RECEIVE_SCALE_PARAMETERS_REVISION_2 = 2
NDIS_RSS_CAPS_HASH_TYPE_TCP_IPV4 = 0x100
NDIS_RSS_PARAM_FLAG_DISABLE_RSS = 0x10
NDIS_HASH_FUNC_TOEPLITZ = 0x1
NDIS_HASH_IPV4 = 0x100
NDIS_HASH_TCP_IPV4 = 0x200
ITAB_NUM = 128                      # indirection table entries, each a u32 queue (channel) number
NETVSC_HASH_KEYLEN = 40
# struct ndis_recv_scale_cap (packed), struct ndis_recv_scale_param (natural alignment); ndis_obj_header first
NDIS_RECV_SCALE_CAP = Layout("ndis_recv_scale_cap", 18, [
    ("type", 0, 1), ("rev", 1, 1), ("size", 2, 2), ("cap_flag", 4, 4), ("num_int_msg", 8, 4),
    ("num_recv_que", 12, 4), ("num_indirect_tabent", 16, 2)])
NDIS_RECV_SCALE_PARAM = Layout("ndis_recv_scale_param", 40, [
    ("type", 0, 1), ("rev", 1, 1), ("size", 2, 2), ("flag", 4, 2), ("hashinfo", 8, 4), ("indirect_tabsize", 12, 2),
    ("indirect_taboffset", 16, 4), ("hashkey_size", 20, 2), ("hashkey_offset", 24, 4),
    ("processor_masks_offset", 28, 4), ("num_processor_masks", 32, 4), ("processor_masks_entry_size", 36, 4)])

# ---- per-packet info and task offload (rndis.h, hyperv_net.h: ndis_per_pkt_info_type, NDIS_OFFLOAD_PARAMETERS) ----
# rndis_per_packet_info: its size, type, and where its value starts (from the info's own start)
RNDIS_PER_PACKET_INFO = Layout("rndis_per_packet_info", 12, [("size", 0, 4), ("type", 4, 4), ("ppi_offset", 8, 4)])
TCPIP_CHKSUM_PKTINFO = 0
TCP_LARGESEND_PKTINFO = 2
NDIS_CSUM_PPI_SIZE = RNDIS_PER_PACKET_INFO.size + 4     # each carries one u32
# ndis_tcp_ip_checksum_info: transmit bits, and the tcp_header_offset at bits 16..25; receive bits
NDIS_TCPIP_CSUM_TX_IPV4 = 1 << 0
NDIS_TCPIP_CSUM_TX_TCP = 1 << 2
NDIS_TCPIP_CSUM_TX_OFFSET_SHIFT = 16
NDIS_TCPIP_CSUM_RX_TCP_FAILED = 1 << 0
NDIS_TCPIP_CSUM_RX_TCP_SUCCEEDED = 1 << 3
NDIS_TCPIP_CSUM_RX_IP_SUCCEEDED = 1 << 5
# ndis_tcp_lso_info, lso_v2_transmit: mss bits 0..19, tcp_header_offset 20..29, type bit 30, ip_version bit 31
NDIS_LSO2_MSS_MASK = 0xFFFFF
NDIS_LSO2_OFFSET_SHIFT = 20
NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE = 1 << 30
OID_TCP_OFFLOAD_PARAMETERS = 0xFC01020C
NDIS_OBJECT_TYPE_DEFAULT = 0x80
NDIS_OFFLOAD_PARAMETERS_REVISION_3 = 3
NDIS_OFFLOAD_PARAMETERS_NO_CHANGE = 0
NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED = 1
NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED = 2
NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED = 3
NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED = 4
NDIS_OFFLOAD_PARAMETERS_LSOV2_DISABLED = 1
NDIS_OFFLOAD_PARAMETERS_LSOV2_ENABLED = 2
NDIS_OFFLOAD_PARAMS = Layout("ndis_offload_params", 28, [
    ("type", 0, 1), ("rev", 1, 1), ("size", 2, 2), ("ip_v4_csum", 4, 1), ("tcp_ip_v4_csum", 5, 1),
    ("udp_ip_v4_csum", 6, 1), ("tcp_ip_v6_csum", 7, 1), ("udp_ip_v6_csum", 8, 1), ("lso_v1", 9, 1),
    ("ip_sec_v1", 10, 1), ("lso_v2_ipv4", 11, 1), ("lso_v2_ipv6", 12, 1), ("tcp_connection_ip_v4", 13, 1),
    ("tcp_connection_ip_v6", 14, 1), ("flags", 16, 4)])


def ppi(kind: int, value: int) -> bytes:
    """One per-packet info carrying ``value`` right after its header."""
    head = RNDIS_PER_PACKET_INFO.pack(NDIS_CSUM_PPI_SIZE, kind, RNDIS_PER_PACKET_INFO.size)
    return head + value.to_bytes(4, "little")


def per_packet_info(message: bytes, offset: int, length: int) -> dict[int, int] | None:
    """The per-packet infos of a PACKET_MSG (``offset`` from the message's body, as
    per_pkt_info_offset counts), each type's u32 value; None when one runs past
    the area or its value past itself (rndis_get_ppi's checks)."""
    at, end, out = RNDIS_BODY + offset, RNDIS_BODY + offset + length, {}
    if end > len(message):
        return None
    while at < end:
        if at + RNDIS_PER_PACKET_INFO.size > end:
            return None
        size, kind, value_at = RNDIS_PER_PACKET_INFO.unpack_from(message, at)
        if value_at < RNDIS_PER_PACKET_INFO.size or value_at + 4 > size or at + size > end:
            return None
        out[kind & 0x7FFFFFFF] = int.from_bytes(message[at + value_at:at + value_at + 4], "little")
        at += size
    return out
