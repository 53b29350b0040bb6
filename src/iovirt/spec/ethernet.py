"""IEEE 802.3 framing, as every NIC, link and stack here counts it (clause 3,
the MAC frame; clause 4, the preamble and inter-packet gap)."""

ETH_ALEN = 6                # octets in a MAC address
ETH_HLEN = 14               # destination, source, type
ETH_MIN_FRAME = 60          # without FCS (Linux's ETH_ZLEN); a MAC pads shorter frames
ETH_FCS_LEN = 4             # the CRC-32 frame check sequence
PREAMBLE_SFD = 8            # preamble and start frame delimiter
IPG = 12                    # minimum inter-packet gap, in byte times
