"""Scenario files: the YAML schema, the wiring checks that follow it, the loader.

Every problem is one line, ``FILE: PATH: MESSAGE``: PATH is the place in the
document (``vms[1].nics[0].mac``), MESSAGE what was expected and what was found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr,
                      ValidationError, model_validator)
from pydantic_core import PydanticCustomError

from iovirt.experiments.catalog import (DEVICES, PHYSICAL_NICS, UPLINK_MODELS, Model, NicKind,
                                        devices_for, implemented_devices)
from iovirt.devices.registry import registry
from iovirt.experiments.workloads import STREAM_CHUNK
from iovirt.guest.kernel import pci_drivers
from iovirt.sim import yamldoc
from iovirt.sim.profile import CostProfile, load_profile

MTU = 1500
MIN_MEMORY_MB = 32  # the guest kernel keeps its DMA buffers above 16 MiB
# What a booted Linux guest holds in memory: Alpine 3.23 (virt kernel) freshly deployed on a KVM VPS, `free -m`:
# 38 MiB used + 28 MiB buff/cache (TierHive, "Minimising Alpine 3.23 on a KVM VPS",
# tierhive.com/blog/tierhive-howto/how-to-run-alpine-with-just-23mb-ram, "Before")
BOOTED_LINUX_RESIDENT_MB = 38 + 28
DIRTY_SET_MB = 16          # memory_dirty's working set unless given
MIN_PACKET = 44  # IPv4 header (20) + UDP or ICMP header (8) + probe (flow, sequence, send time: 16)
WIRE = "wire"  # workload dst: a peer on the physical link
ASSIGNED = ("sriov", "passthrough")  # models whose NIC is a function assigned to the VM

# ---- limits: what the real systems allow, and what one run can hold --------------------------------
# A VM's RAM is one flat buffer, as one KVM memory slot: KVM_MEM_MAX_NR_PAGES (include/linux/kvm_host.h)
# is 2^31 - 1 pages of 4 KiB per slot, 8 TiB less a page, and KVM_SET_USER_MEMORY_REGION refuses more.
MAX_MEMORY_MB = ((1 << 31) - 1) * 4096 >> 20
KVM_MAX_VCPUS = 1024       # arch/x86/include/asm/kvm_host.h (Linux 6.x): vCPUs of one x86 VM
XEN_HVM_MAX_VCPUS = 128    # xen/include/public/hvm/hvm_info_table.h HVM_MAX_VCPUS: vCPUs of one HVM domain
NR_CPUS_MAX = 8192         # arch/x86/Kconfig NR_CPUS_RANGE_END with CONFIG_MAXSMP: CPUs one Linux kernel runs
ESXI_MAX_VCPUS = 768       # VMware, vSphere 8.0 Configuration Maximums: virtual CPUs per virtual machine
HYPERV_MAX_VCPUS = 240     # Microsoft, "Plan for Hyper-V scalability in Windows Server": virtual processors per VM
XEN_MAX_CPUS = 4096        # Xen's SUPPORT.md, "Physical CPUs": x86 supported up to 4096
PCI_NIC_SLOTS = 32 - 3     # bus 0's 32 device numbers, less 00-02: host bridge, ISA bridge, VGA (QEMU's pc)
MAX_HOST_NICS = 0xFF - 3 + 1  # each port behind a root port of its own, on buses 03..ff (8-bit bus numbers)
# Simulated time: about 7 s of wall time per simulated second for one saturated 1500-byte e1000 stream
# (examples/emulated-e1000.yaml measured on one core), so 10 s is over a minute per stream and 1000 times
# the examples' 10 ms; throughput, latency and utilisation are steady within a few milliseconds.
MAX_DURATION_MS = 10_000
MAX_RATE_PPS = 1e9         # one packet per ns, the clock's resolution
MIN_LINK_GBPS = 0.01       # 10 Mbit/s: 10BASE-T, the slowest IEEE 802.3 rate
MAX_LINK_GBPS = 800        # 800GBASE (IEEE 802.3df-2024), the fastest
# ip link set PF vf N max_tx_rate: ixgbe_ndo_set_vf_bw refuses 10 Mbit/s or less, and more than the link
MIN_VF_RATE_MBPS, MAX_VF_RATE_MBPS = 11, 10_000
# e1000's InterruptThrottleRate accepts 100-100000 interrupts/s (drivers/net/ethernet/intel/e1000/e1000_param.c)
MIN_INTERRUPT_RATE, MAX_INTERRUPT_RATE = 100, 100_000
MIN_RATE_PPS = 1000 / MAX_DURATION_MS  # one packet in the longest run
PINGS_PER_MS = 1000        # ping -c sends on past duration_ms; at most one echo request per microsecond of it
MAX_DOWNTIME_MS = 2000 * 1000   # QEMU migration/options.c MAX_MIGRATE_DOWNTIME_SECONDS: downtime-limit <= 2000 s
# A write rate above any x86 server's memory bandwidth (12 channels of DDR5-4800 move 460.8 GB/s).
MAX_DIRTY_MIB_S = 1 << 20
# One run holds every machine in one process: each VM costs about 0.5 MB and 5 ms to build and boot
# (4000 one-NIC VMs measured at 2.3 GB, 27 s before the first packet), each 8192-core host 2 MB and
# 35 ms; no hypervisor here is the tighter limit (Xen's domain ids stop at 32751, KVM sets none).
MAX_VMS = 4096
MAX_HOSTS = 256
MAX_WORKLOADS = MAX_VMS    # each a flow on UDP port 5001 + its index, below 65536
# The file: a scenario at the count limits (4096 VMs with 29 NICs each, 4096 workloads), one key a line, is
# about 14 MB; how deep it may nest is yamldoc.MAX_NESTING's.
MAX_FILE_BYTES = 16 << 20


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message is one line."""


def _expected(message: str) -> PydanticCustomError:
    return PydanticCustomError("expected", message)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise _expected("expected a name of letters, digits, '.', '_' and '-'")
    return value


def _mac(value: Any) -> str:
    if isinstance(value, int):  # YAML 1.1 reads an unquoted 52:54:00:00:00:01 as a base-60 number
        raise _expected("expected a MAC address in quotes, like \"52:54:00:00:00:01\"")
    mac = value.lower() if isinstance(value, str) else ""
    if not _MAC.fullmatch(mac):
        raise _expected("expected a MAC address of 6 colon-separated hex octets, like 52:54:00:00:00:01")
    if int(mac[:2], 16) & 1:
        raise _expected("expected a unicast MAC (low bit of the first octet clear)")
    return mac


def _ipv4_interface(value: Any) -> IPv4Interface:
    try:
        iface = IPv4Interface(value) if isinstance(value, str) and "/" in value else None
    except ValueError:
        iface = None
    if iface is None:
        raise _expected("expected an IPv4 address with prefix length, like 10.0.0.1/24")
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise _expected(f"expected a host address of {net}, not its network or broadcast address")
    return iface


def _packet_size(value: int) -> int:
    if not MIN_PACKET <= value <= MTU:
        raise _expected(f"expected {MIN_PACKET}..{MTU} bytes: the IPv4 packet (20 B IPv4 + 8 B UDP/ICMP + 16 B probe "
                        f"header + payload) must fit one {MTU}-byte-MTU frame")
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _at_most(limit: float, unit: str, why: str) -> AfterValidator:
    """A bound with its reason: ``expected at most LIMIT UNIT (WHY)``."""
    def check(value: Any) -> Any:
        if value > limit:
            raise _expected(f"expected at most {_number(limit)} {unit} ({why})")
        return value
    return AfterValidator(check)


def _at_most_items(limit: int, unit: str, why: str) -> BeforeValidator:
    """A list bound, checked before the items are (a list of a million is refused at once)."""
    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise _expected(f"expected at most {limit} {unit} ({why})")
        return value
    return BeforeValidator(check)


def _at_least(limit: float, unit: str, why: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if value < limit:
            raise _expected(f"expected at least {_number(limit)} {unit} ({why})")
        return value
    return AfterValidator(check)


Name = Annotated[str, AfterValidator(_name)]
Mac = Annotated[str, BeforeValidator(_mac)]
Ipv4 = Annotated[IPv4Interface, BeforeValidator(_ipv4_interface)]
PacketSize = Annotated[int, AfterValidator(_packet_size)]
Positive = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            keys = [field.alias or name for name, field in cls.model_fields.items()]
            unknown = [key for key in data if key not in keys]
            if unknown:
                raise PydanticCustomError("unknown_key", "unknown key (expected one of {expected})",
                                          {"key": unknown[0], "expected": ", ".join(keys)})
        return data


SimTime = Annotated[float, _at_most(MAX_DURATION_MS, "ms", "the longest run simulated")]
LinkGbps = Annotated[float, Field(gt=0), _at_least(MIN_LINK_GBPS, "Gbit/s", "10BASE-T, the slowest Ethernet"),
                     _at_most(MAX_LINK_GBPS, "Gbit/s", "800GBASE, IEEE 802.3df")]


Hypervisor = Literal["kvm", "xen", "esxi", "hyperv"]
HYPERVISORS: tuple[str, ...] = get_args(Hypervisor)


class HostNic(_Strict):
    name: Name
    kind: NicKind = "x82599"
    link_gbps: LinkGbps = 10.0
    num_vfs: Annotated[int, Field(ge=0)] = 0
    # the fraction of frames its cable damages, either way (each found by the receiver's FCS check and discarded)
    frame_error_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0
    gro: bool = True  # the host driver's GRO on the bridge's uplink (ethtool -K gro), on KVM and Xen hosts


class Host(_Strict):
    name: Name
    cores: Annotated[int, Field(ge=1), _at_most(NR_CPUS_MAX, "cores", "Linux's NR_CPUS limit, CONFIG_MAXSMP")]
    nics: Annotated[list[HostNic], _at_most_items(MAX_HOST_NICS, "physical NICs", "each behind a root port of its "
                                                                              "own, on buses 03-ff")] = []
    posted_interrupts: bool = False  # VT-d posted interrupts with APIC virtualisation
    iommu_page_kb: Literal[4, 2048] = 2048  # page size of assigned VMs' IOMMU mappings
    iotlb_entries: Count = 64
    hypervisor: Hypervisor = "kvm"
    pml: bool = True  # dirty logging by Intel PML; false: by write-protecting pages (AMD, Intel before Broadwell)


def _moderation(value: Any) -> Any:
    if value is False:                  # YAML 1.1 reads an unquoted off as false
        return "off"
    if value in ("adaptive", "off") or (type(value) is int and MIN_INTERRUPT_RATE <= value <= MAX_INTERRUPT_RATE):
        return value
    raise _expected(f"expected 'adaptive', 'off' or {MIN_INTERRUPT_RATE}-{MAX_INTERRUPT_RATE} interrupts/s "
                    f"(e1000's InterruptThrottleRate bounds)")


def _moderation_or_lab(value: Any) -> Any:
    """The far end's: as ``_moderation``, or None for what a lab would set (:func:`far_end_moderation`)."""
    return None if value is None else _moderation(value)


class Offloads(_Strict):
    """The guest's offload switches for a NIC, as ``ethtool -K`` sets them: the
    stack's software GSO and GRO (on by default, as in Linux), and the
    device's TCP segmentation (``tso``), transmit checksum (``tx``) and
    receive checksum validation (``rx``) where its driver negotiated them,
    and the device's receive of merged TCP packets (``gro_hw``, rx-gro-hw:
    virtio's GUEST_TSO4; it needs ``rx``, as netdev_fix_features has it); a
    device without one simply lacks it."""

    gso: bool = True
    gro: bool = True
    tso: bool = True
    tx: bool = True
    rx: bool = True
    gro_hw: bool = True


class VmNic(_Strict):
    model: Model
    device: str
    backend: str | None = None  # None: the device's default backend, filled in by the loader
    uplink: str | None = None
    mac: Mac
    ip: Ipv4
    # SR-IOV only: the PF driver's policy for this VF (ip link set PF vf N ...)
    rate_mbps: Annotated[int, _at_least(MIN_VF_RATE_MBPS, "Mbit/s", "the PF driver takes a max_tx_rate above 10, "
                                                              "ixgbe_ndo_set_vf_bw"),
                         _at_most(MAX_VF_RATE_MBPS, "Mbit/s", "the 82599's 10 Gbit/s link")] | None = None
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None
    spoofchk: bool = True
    trust: bool = False
    # paravirt virtio-net or netvsc only: the failover standby of the VM's sriov or passthrough NIC with the same
    # MAC and ip
    standby: bool = False
    # ethtool -C / InterruptThrottleRate: the driver's adaptive moderation, none, or a fixed rate (interrupts/s)
    interrupt_moderation: Annotated[Any, BeforeValidator(_moderation)] = "adaptive"
    # the chip a device model with variants is (e1000: 82540em, 82545em); None: its host's default, filled in by
    # the loader (an esxi host's e1000 is the 82545EM)
    variant: str | None = None
    # the guest driver that binds it when several can (driver_override): flexible with "pcnet" stays a Vlance
    guest_driver: str | None = None
    offloads: Offloads = Offloads()
    # netvsc only (ethtool -L combined): its VMBus channels, the primary and vRSS sub-channels; None: one per
    # vCPU up to VRSS_CHANNEL_DEFAULT and what the host has
    channels: Annotated[int, Field(ge=1, le=64)] | None = None


class Vm(_Strict):
    name: Name
    host: str
    vcpus: Count = 1                    # bounded by the host's hypervisor (the wiring checks)
    memory_mb: Annotated[int, Field(ge=MIN_MEMORY_MB),
                         _at_most(MAX_MEMORY_MB, "MiB", "one KVM memory slot, KVM_MEM_MAX_NR_PAGES: "
                                                       "2^31 - 1 pages of 4 KiB")] = 256
    # the booted guest's kernel, page cache and processes (non-zero pages a migration moves); None: a booted
    # Linux's BOOTED_LINUX_RESIDENT_MB, as much of it as fits beside the DMA room and working sets (the loader)
    resident_mb: Annotated[int, Field(ge=0)] | None = None
    nics: list[VmNic] = []
    bare_metal: bool = False  # the host itself runs this OS and owns its NICs: no hypervisor


class Workload(_Strict):
    type: Literal["ping", "udp_stream", "request_response", "tcp_stream", "tcp_rr", "memory_dirty"]
    src: str
    dst: str | None = None  # memory_dirty has none
    packet_size: PacketSize = Field(description="IPv4 packet bytes: 1500 for udp_stream (and the MTU-sized "
                                                "segments of tcp_stream), else 64 by default")
    duration_ms: Annotated[float, Field(gt=0), _at_most(MAX_DURATION_MS, "ms of simulated time",
                                                          "about a minute of wall time per saturated stream")] = 10.0
    rate_pps: Annotated[float, Field(gt=0), _at_least(MIN_RATE_PPS, "packets per second", "one in the longest run"),
                        _at_most(MAX_RATE_PPS, "packets per second", "one per ns, the clock's resolution")
                        ] | None = None  # None: as fast as the path allows
    warmup_ms: Annotated[float, Field(ge=0)] = 0.0  # deliveries before start + warmup_ms count for all but throughput
    count: Count | None = None  # ping only
    # tcp_stream only: bytes per send() (netperf -m; its default, the send buffer's initial 16 KiB)
    message_size: Annotated[int, Field(ge=1), _at_most(STREAM_CHUNK, "bytes", "one write of the stream's pattern")
                            ] | None = None
    # tcp_rr only: bytes per request and per response (netperf -r; its default 1,1)
    request_size: Annotated[int, Field(ge=1), _at_most(STREAM_CHUNK, "bytes", "one write of the stream's pattern")
                            ] | None = None
    response_size: Annotated[int, Field(ge=1), _at_most(STREAM_CHUNK, "bytes", "one write of the stream's pattern")
                             ] | None = None
    # memory_dirty only: the guest rewrites its working set at this rate (MiB/s)
    dirty_mib_s: Annotated[float, Field(gt=0), _at_most(MAX_DIRTY_MIB_S, "MiB/s", "above any server's memory "
                                                         "bandwidth: 12 channels of DDR5-4800 move 460.8 GB/s")
                           ] | None = None
    working_set_mb: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_packet_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "packet_size" not in data:
            return {**data, "packet_size": MTU if data.get("type") in ("udp_stream", "tcp_stream") else 64}
        return data


class Migration(_Strict):
    """A live migration, run by ``iovirt migrate`` (its --vm/--to override)."""

    vm: str | None = None
    to: str | None = None
    at_ms: Annotated[SimTime, Field(ge=0)] = 1.0  # after the workloads start
    link_gbps: LinkGbps = 10.0
    downtime_ms: Annotated[float, Field(gt=0), _at_most(MAX_DOWNTIME_MS, "ms", "QEMU's downtime-limit maximum, "
                                                                            "2000 s")] = 300.0  # QEMU's default
    max_rounds: Count = 30
    fail_at_ms: Annotated[SimTime, Field(ge=0)] | None = None  # the migration link fails then (after the workloads
                                                                # start, as at_ms: not before at_ms)


class Peer(_Strict):
    """The hosts at the far end of the wire (one per subnet a workload reaches
    it on): bare-metal machines of ``cores`` CPUs, each on a 10GbE 82599 run
    by the ixgbe driver (a queue pair per CPU, RSS) with ``rx_ring`` RX
    descriptors per queue (``ethtool -G rx``) and the kernel's stack above it.
    A one-way stream is taken by a traffic tester through XDP (``receiver:
    tester``), or by a socket on the stack as netperf's netserver takes it
    (``socket``).  Its NIC's interrupt moderation is set as a test lab sets
    up a receiver unless given: off (``ethtool -C rx-usecs 0``) when a
    workload times round trips against it (ping, request/response, TCP_RR),
    so that its own moderation does not set the round trips measured; the
    driver's adaptive default otherwise, so that the ACKs a TCP sender must
    process do not follow the sender's own frame spacing (see
    :func:`far_end_moderation`)."""

    kind: Literal["host"] = "host"
    receiver: Literal["tester", "socket"] = "tester"
    interrupt_moderation: Annotated[Any, BeforeValidator(_moderation_or_lab)] = None
    cores: Annotated[int, Field(ge=1), _at_most(NR_CPUS_MAX, "cores", "Linux's NR_CPUS limit, CONFIG_MAXSMP")] = 16
    rx_ring: Annotated[int, Field(ge=64), _at_most(8192, "descriptors", "the 82599's ring limit, IXGBE_MAX_RXD")] = 512


class Fabric(_Strict):
    """The top-of-rack switch the hosts' ports are cabled to."""

    # Arista 7050S-64 datasheet: a 9 MB packet buffer shared by its 64 10GbE ports; its even share per port
    buffer_kb: Annotated[int, Field(ge=2)] = 9 * 1024 // 64


class Capture(_Strict):
    port: str            # one of capture_ports(scenario)
    file: Annotated[str, Field(min_length=1)]   # pcapng, relative to the working directory


class Scenario(_Strict):
    name: Name
    profile_ref: str = Field("default", alias="profile", min_length=1)
    hosts: Annotated[list[Host], Field(min_length=1), _at_most_items(MAX_HOSTS, "hosts", "one run holds them all")]
    vms: Annotated[list[Vm], Field(min_length=1), _at_most_items(MAX_VMS, "VMs", "one run holds them all")]
    workloads: Annotated[list[Workload], _at_most_items(MAX_WORKLOADS, "workloads", "one per VM")] = []
    migration: Migration | None = None
    peer: Peer = Peer()
    fabric: Fabric = Fabric()
    capture: list[Capture] = []

    _profile: CostProfile | None = PrivateAttr(None)
    _source_path: Path | None = PrivateAttr(None)
    _source: str = PrivateAttr("<dict>")

    @property
    def profile(self) -> CostProfile:
        """The resolved cost profile (set by ``from_dict`` / ``load_scenario``)."""
        return self._profile

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    def with_profile(self, profile: CostProfile) -> Scenario:
        """A copy of this scenario priced by ``profile``."""
        copy = self.model_copy(deep=True)
        copy._profile = profile
        return copy

    @property
    def source(self) -> str:
        """What errors found later (building the world) name the scenario by: its file."""
        return self._source

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", base: Path | None = None) -> Scenario:
        """Validate ``data``; a relative profile path resolves against ``base``."""
        try:
            scenario = cls.model_validate(data)
        except ValidationError as exc:
            raise ScenarioError(f"{source}: {_describe(exc.errors()[0])}") from None
        problem = next(_wiring_problems(scenario), None)
        if problem:
            raise ScenarioError(f"{source}: {problem[0]}: {problem[1]}")
        try:
            scenario._profile = load_profile(scenario.profile_ref, base)
        except (OSError, ValueError) as exc:  # ProfileError, or an unreadable file
            raise ScenarioError(f"{source}: profile: {exc}") from None
        hypervisors = {host.name: host.hypervisor for host in scenario.hosts}
        for vm in scenario.vms:
            for nic in vm.nics:
                nic.backend = nic.backend or next(iter(DEVICES[nic.device].backends), None)
                entry = registry().get(nic.device)
                nic.variant = nic.variant or (entry.variant_for(hypervisors[vm.host]) if entry else None)
            if vm.resident_mb is None:
                sets = sum(w.working_set_mb or DIRTY_SET_MB for w in scenario.workloads
                           if w.type == "memory_dirty" and w.src == vm.name)
                vm.resident_mb = max(0, min(BOOTED_LINUX_RESIDENT_MB, vm.memory_mb - MIN_MEMORY_MB - sets))
        scenario._source = source
        return scenario


ROUND_TRIPS = ("ping", "request_response", "tcp_rr")     # workloads that time round trips


def far_end_moderation(s: Scenario) -> Any:
    """The far end's interrupt moderation: ``peer.interrupt_moderation`` if
    given; else off when a workload times round trips against the far end,
    adaptive (ixgbe's default) when none does."""
    if s.peer.interrupt_moderation is not None:
        return s.peer.interrupt_moderation
    return "off" if any(w.type in ROUND_TRIPS and WIRE in (w.src, w.dst) for w in s.workloads) else "adaptive"


def backed_up(vm: Vm, nic: VmNic) -> bool:
    """A virtio-net standby of ``vm`` shares ``nic``'s MAC (net_failover)."""
    return any(n.standby and n.mac == nic.mac for n in vm.nics)


def save_records(vm: Vm, xen: bool) -> str:
    """The save records ``vm``'s vCPUs migrate in (hypervisor/cpustate.py): a
    Xen guest whose NICs are all netfronts is a PV domain, one with an emulated
    or assigned PCI function an HVM domain."""
    if not xen:
        return "kvm"
    return "xen-pv" if all(nic.device == "xen-netfront" for nic in vm.nics) else "xen-hvm"


def migration_problem(scenario: Scenario, vm: str, to: str) -> str | None:
    """Why ``vm`` cannot run on host ``to`` (None: it can), from the devices alone."""
    spec = next(v for v in scenario.vms if v.name == vm)
    host = next(h for h in scenario.hosts if h.name == to)
    if spec.bare_metal:
        return "a bare-metal machine has no hypervisor to migrate it"
    vms, hosts = {v.name: v for v in scenario.vms}, {h.name: h for h in scenario.hosts}
    if any(n.uplink is None for n in spec.nics) and bridge_port(to, vms, hosts) is None:
        return f"{to} has no port to bridge {vm}'s software NICs onto (it has none, or each is passed through)"
    limit, _, why = vcpu_limit(spec, host)
    if spec.vcpus > limit:
        return f"{vm} has {spec.vcpus} vCPUs; a VM on {to} ({host.hypervisor}) has at most {limit} ({why})"
    source = hosts[spec.host].hypervisor
    for nic in spec.nics:
        device = DEVICES[nic.device]
        if source == "esxi" and nic.model in ASSIGNED:
            what = "DirectPath I/O" if nic.model == "passthrough" else "an SR-IOV passthrough adapter"
            return (f"{nic.device} ({what}, {nic.uplink}) blocks vMotion: its state lives in the physical "
                    f"function and its DMA writes are not traced (vSphere: vMotion is not available for a VM "
                    f"with {what})")
        if not device.offered_on(host.hypervisor):
            need = f"needs a {device.hypervisor} host" if device.hypervisor else device.needs()
            return f"{nic.device} {need}; {to} runs {host.hypervisor}"
        if nic.model in ASSIGNED and not backed_up(spec, nic):
            what = f"{nic.uplink}, passed through" if nic.model == "passthrough" else f"a VF of {nic.uplink}"
            return (f"{nic.device} ({what}) has no failover standby to carry the VM while it is "
                    f"unplugged: its state lives in the NIC and its DMA writes are not dirty-logged; give the VM "
                    f"a virtio-net NIC with standby: true and the same MAC")
    vendor = next((v for v in (source, host.hypervisor) if v in _OWN_MIGRATION), None)
    if vendor is not None and source != host.hypervisor:
        return (f"{_OWN_MIGRATION[vendor]}: {spec.host} runs {source}, {to} runs {host.hypervisor} "
                f"(no live migration between hypervisors of different vendors)")
    return None


_OWN_MIGRATION = {"esxi": "vMotion moves a VM between ESXi hosts only",
                  "hyperv": "Hyper-V live-migrates a VM between Hyper-V hosts only"}


def migration_note(scenario: Scenario, vm: str, to: str) -> str:
    """What an allowed move will not bring along."""
    spec = next(v for v in scenario.vms if v.name == vm)
    host = next(h for h in scenario.hosts if h.name == to)
    if any(n.model == "sriov" for n in spec.nics) and not any(p.num_vfs for p in host.nics):
        return f"stays on its virtio-net standby: {to} has no port with VFs"
    free = {p.name for p in host.nics} - {bridge_port(to, {v.name: v for v in scenario.vms},
                                                      {h.name: h for h in scenario.hosts})}
    if any(n.model == "passthrough" and n.uplink not in free for n in spec.nics):
        return f"stays on its virtio-net standby: {to} has no free port of the same name to pass through"
    return ""


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = yamldoc.load(yamldoc.read(path, MAX_FILE_BYTES))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: expected UTF-8 text, got undecodable bytes") from None
    except yamldoc.TooLarge:
        raise ScenarioError(f"{path}: (file): expected a scenario of at most {MAX_FILE_BYTES >> 20} MiB "
                            f"({MAX_VMS} VMs with {PCI_NIC_SLOTS} NICs each fit in less), got more") from None
    except (yamldoc.TooDeep, yamldoc.Duplicate) as exc:
        mark = exc.problem_mark
        raise ScenarioError(f"{path}: line {mark.line + 1}, column {mark.column + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ScenarioError(f"{path}: {where}: invalid YAML: {problem}") from None
    if data is None:
        raise ScenarioError(f"{path}: (top level): expected a scenario mapping, got an empty file")
    scenario = Scenario.from_dict(data, source=str(path), base=path.parent)
    scenario._source_path = path
    return scenario


# ---- error messages ----------------------------------------------------------

_EXPECTED = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "model_type": "expected a mapping",
    "greater_than": "expected a number > {gt:g}",
    "greater_than_equal": "expected a number >= {ge:g}",
    "less_than": "expected a number < {lt:g}",
    "too_short": "expected at least {min_length} item(s)",
    "string_too_short": "expected a non-empty string",
    "literal_error": "expected {expected}",
}


def _describe(err: dict[str, Any]) -> str:
    loc, ctx = err["loc"], err.get("ctx", {})
    if err["type"] == "missing":
        return f"{_path(loc)}: required, but missing"
    if err["type"] == "unknown_key":
        return f"{_path((*loc, ctx['key']))}: {err['msg']}"
    template = _EXPECTED.get(err["type"])
    expected = template.format(**ctx) if template else err["msg"]
    return f"{_path(loc)}: {expected}, got {_show(err['input'])}"


def _path(loc: tuple[Any, ...]) -> str:
    return "".join(_step(part) for part in loc).lstrip(".") or "(top level)"


def _step(part: Any) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    return f".{part}" if isinstance(part, str) and _NAME.fullmatch(part) else f"[{part!r}]"


def _show(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- wiring checks -----------------------------------------------------------
# Consumed lazily with next(): each check may assume the ones before it passed.

def capture_ports(s: Scenario) -> dict[str, str]:
    """Where frames can be captured: name -> what is seen there."""
    ports = {}
    for host in s.hosts:
        ports[f"{host.name}/bridge"] = "the host's bridge: every frame handed to it"
        ports.update({f"{host.name}/{nic.name}": "a physical port's wire side" for nic in host.nics})
    for vm in s.vms:
        ports[vm.name] = "the guest's interfaces, as tcpdump in the guest sees them"
        if not vm.bare_metal and any(nic.uplink is None for nic in vm.nics):
            ports[f"{vm.host}/{vm.name}/tap"] = "the VM's taps on the host bridge"
    return ports


def capture_problem(s: Scenario, port: str) -> str | None:
    ports = list(capture_ports(s))
    if port in ports:
        return None
    some = ", ".join(ports[:6]) + (", …" if len(ports) > 6 else "")
    return f"expected a VM, HOST/VM/tap, HOST/bridge or HOST/NIC of this scenario ({some}), got {port!r}"


def _wiring_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    hosts = {host.name: host for host in s.hosts}
    vms = {vm.name: vm for vm in s.vms}
    yield from _duplicates("host name", [(f"hosts[{i}].name", h.name) for i, h in enumerate(s.hosts)])
    for i, host in enumerate(s.hosts):
        yield from _host_problems(f"hosts[{i}]", host)
    yield from _duplicates("VM name", [(f"vms[{i}].name", vm.name) for i, vm in enumerate(s.vms)])
    for i, vm in enumerate(s.vms):
        yield from _vm_problems(f"vms[{i}]", vm, hosts)
    nics = [(f"vms[{i}].nics[{j}]", vm, nic) for i, vm in enumerate(s.vms) for j, nic in enumerate(vm.nics)]
    for standby in (False, True):       # a standby repeats its primary's MAC and address
        pick = [(where, nic) for where, _, nic in nics if nic.standby == standby]
        kind = "standby " if standby else ""
        yield from _duplicates(f"{kind}MAC", [(f"{where}.mac", nic.mac) for where, nic in pick])
        yield from _duplicates(f"{kind}IP address", [(f"{where}.ip", str(nic.ip.ip)) for where, nic in pick])
    yield from _uplink_problems(nics, hosts)
    for i, workload in enumerate(s.workloads):
        yield from _workload_problems(f"workloads[{i}]", workload, vms, hosts)
    for i, capture in enumerate(s.capture):
        problem = capture_problem(s, capture.port)
        if problem:
            yield f"capture[{i}].port", problem
    yield from _duplicates("capture file", [(f"capture[{i}].file", c.file) for i, c in enumerate(s.capture)])
    if s.migration is not None:
        yield from _migration_problems(s.migration, vms, hosts)


def _migration_problems(m: Migration, vms: dict[str, Vm], hosts: dict[str, Host]) -> Iterator[tuple[str, str]]:
    if m.vm is not None and m.vm not in vms:
        yield "migration.vm", f"expected one of the VMs ({', '.join(vms)}), got {m.vm!r}"
    elif m.to is not None and m.to not in hosts:
        yield "migration.to", f"expected one of the hosts ({', '.join(hosts)}), got {m.to!r}"
    elif m.vm is not None and vms[m.vm].host == m.to:
        yield "migration.to", f"expected a host other than {m.vm}'s own ({m.to})"
    elif m.vm is not None and vms[m.vm].bare_metal:
        yield "migration.vm", f"expected a VM, got {m.vm!r}: a bare-metal machine does not migrate"
    if m.fail_at_ms is not None and m.fail_at_ms < m.at_ms:
        yield ("migration.fail_at_ms", f"expected a time at or after at_ms ({_number(m.at_ms)} ms): both count from "
                                       f"the workloads' start, and the link cannot fail before the migration starts "
                                       f"on it, got {_number(m.fail_at_ms)}")


def _dirty_problems(where: str, w: Workload, vm: Vm) -> Iterator[tuple[str, str]]:
    if w.dst is not None:
        yield f"{where}.dst", f"expected no dst for memory_dirty (the guest writes its own memory), got {w.dst!r}"
    if w.dirty_mib_s is None:
        yield f"{where}.dirty_mib_s", "expected the rate the guest dirties memory at, in MiB/s (missing)"
    room, size = vm.memory_mb - MIN_MEMORY_MB - (vm.resident_mb or 0), w.working_set_mb or DIRTY_SET_MB
    if size > room:
        resident = "" if vm.resident_mb is None else f", resident_mb {vm.resident_mb}"
        yield (f"{where}.working_set_mb", f"expected at most {room} MiB ({w.src} has {vm.memory_mb}{resident}), "
                                          f"got {size}" + ("" if w.working_set_mb else " (the default)"))


def _duplicates(what: str, items: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    seen: dict[str, str] = {}
    for path, value in items:
        if value in seen:
            yield path, f"expected a unique {what}, got {value!r} again (first at {seen[value]})"
        seen[value] = path


def _host_problems(where: str, host: Host) -> Iterator[tuple[str, str]]:
    if host.hypervisor == "xen" and host.cores > XEN_MAX_CPUS:
        yield (f"{where}.cores", f"expected at most {XEN_MAX_CPUS} cores on a xen host (Xen supports up to "
                                 f"{XEN_MAX_CPUS} physical CPUs), got {host.cores}")
    yield from _duplicates("NIC name", [(f"{where}.nics[{j}].name", n.name) for j, n in enumerate(host.nics)])
    for j, nic in enumerate(host.nics):
        max_vfs = PHYSICAL_NICS[nic.kind].max_vfs
        if nic.num_vfs > max_vfs:
            yield (f"{where}.nics[{j}].num_vfs",
                   f"expected at most {max_vfs} VFs on an {nic.kind} (the PF driver's limit: "
                   f"one of its {max_vfs + 1} pools stays the PF's), got {nic.num_vfs}")


def _vm_problems(where: str, vm: Vm, hosts: dict[str, Host]) -> Iterator[tuple[str, str]]:
    if vm.name == WIRE:
        yield f"{where}.name", f"expected a name other than '{WIRE}' (the peer on the physical link), got 'wire'"
    if vm.host not in hosts:
        yield f"{where}.host", f"expected one of the hosts ({', '.join(hosts)}), got {vm.host!r}"
    limit, what, why = vcpu_limit(vm, hosts[vm.host])
    if vm.vcpus > limit:
        yield f"{where}.vcpus", f"expected at most {limit} {what} ({why}), got {vm.vcpus}"
    if vm.resident_mb is not None and vm.resident_mb > vm.memory_mb - MIN_MEMORY_MB:
        yield (f"{where}.resident_mb", f"expected at most {vm.memory_mb - MIN_MEMORY_MB} MiB: memory_mb "
                                       f"({vm.memory_mb}) less {MIN_MEMORY_MB} the kernel keeps (the first 16 MiB, "
                                       f"and 16 MiB for DMA rings and buffers), got {vm.resident_mb}")
    pci_nics = sum(nic.device != "xen-netfront" for nic in vm.nics)
    if pci_nics > PCI_NIC_SLOTS:
        yield (f"{where}.nics", f"expected at most {PCI_NIC_SLOTS} PCI NICs (bus 0 has 32 slots; 0-2 hold the host "
                                f"bridge, ISA bridge and VGA), got {pci_nics}")
    for j, nic in enumerate(vm.nics):
        if vm.bare_metal and nic.model != "passthrough":
            yield (f"{where}.nics[{j}].model", f"expected 'passthrough' on a bare-metal machine (it drives a "
                                               f"physical NIC of its own; nothing emulates one), got {nic.model!r}")
            continue
        yield from _nic_problems(f"{where}.nics[{j}]", nic, hosts[vm.host])
        if nic.standby:
            yield from _standby_problems(f"{where}.nics[{j}]", nic, vm)


def vcpu_limit(vm: Vm, host: Host) -> tuple[int, str, str]:
    """How many vCPUs ``vm`` may have on ``host``: the limit, what it counts, why."""
    if vm.bare_metal:
        return NR_CPUS_MAX, "CPUs for a bare-metal machine", "Linux's NR_CPUS limit, CONFIG_MAXSMP"
    if host.hypervisor == "esxi":
        return ESXI_MAX_VCPUS, "vCPUs on an esxi host", "vSphere 8.0's virtual CPUs per virtual machine"
    if host.hypervisor == "xen":
        return XEN_HVM_MAX_VCPUS, "vCPUs on a xen host", "HVM_MAX_VCPUS: an HVM domain's limit"
    if host.hypervisor == "hyperv":
        return HYPERV_MAX_VCPUS, "vCPUs on a hyperv host", "Windows Server's virtual processors per VM"
    return KVM_MAX_VCPUS, "vCPUs on a kvm host", "KVM_MAX_VCPUS"


def _standby_problems(where: str, nic: VmNic, vm: Vm) -> Iterator[tuple[str, str]]:
    """net_failover: a virtio-net standby backs up the VM's assigned NIC with its MAC; one interface, one address."""
    if (nic.model, nic.device) not in (("paravirt", "virtio-net"), ("paravirt", "netvsc")):
        yield (f"{where}.standby", f"expected standby only on a paravirt virtio-net NIC (VIRTIO_NET_F_STANDBY) or "
                                   f"a netvsc (the synthetic path of a Hyper-V VF), "
                                   f"got model {nic.model!r}, device {nic.device!r}")
    primary = next((p for p in vm.nics if p.mac == nic.mac and p.model in ASSIGNED), None)
    if primary is None:
        yield (f"{where}.mac", f"expected the MAC of an sriov or passthrough NIC of {vm.name} (the primary a "
                               f"standby backs up), got {nic.mac!r}")
    elif primary.ip != nic.ip:
        yield f"{where}.ip", f"expected {primary.ip} (its primary's: the failover pair is one interface), got {nic.ip}"


def _nic_problems(where: str, nic: VmNic, host: Host) -> Iterator[tuple[str, str]]:
    device = DEVICES.get(nic.device)
    if device is None or device.model != nic.model:
        found = f" (a {device.model} device)" if device else ""
        yield (f"{where}.device", f"expected one of {', '.join(devices_for(nic.model))} for model "
                                  f"{nic.model!r}, got {nic.device!r}{found}")
    if nic.backend is not None and nic.backend not in device.backends:
        choices = f"one of {', '.join(device.backends)}" if device.backends else "no backend"
        yield f"{where}.backend", f"expected {choices} for {device.name}, got {nic.backend!r}"
    uplinks = [pnic.name for pnic in host.nics]
    if nic.model in UPLINK_MODELS and nic.uplink not in uplinks:
        yield (f"{where}.uplink", f"expected one of {host.name}'s physical NICs ({', '.join(uplinks) or 'none'}) "
                                  f"for model {nic.model!r}, got {_show(nic.uplink)}")
    vf_settings = [key for key in ("rate_mbps", "vlan") if getattr(nic, key) is not None]
    vf_settings += [key for key, default in (("spoofchk", True), ("trust", False)) if getattr(nic, key) != default]
    if nic.model != "sriov" and vf_settings:
        yield (f"{where}.{vf_settings[0]}", f"expected no VF setting for model {nic.model!r} "
                                            f"(only sriov NICs take rate_mbps, vlan, spoofchk, trust)")
    if nic.model not in UPLINK_MODELS and nic.uplink is not None:
        yield (f"{where}.uplink", f"expected no uplink for model {nic.model!r} (only "
                                  f"{' and '.join(UPLINK_MODELS)} take one), got {nic.uplink!r}")
    if nic.channels is not None and nic.device != "netvsc":
        yield (f"{where}.channels", f"expected no channel count for {nic.device} (only a netvsc's vRSS channels "
                                    f"are set, ethtool -L), got {nic.channels}")
    if nic.interrupt_moderation != "adaptive" and device and device.implemented and not _coalesces(nic.device):
        yield (f"{where}.interrupt_moderation", f"expected 'adaptive' for {nic.device} (its driver has no "
                                                f"interrupt moderation to set, ethtool -C says EOPNOTSUPP), "
                                                f"got {nic.interrupt_moderation!r}")
    if not device.implemented:
        yield (f"{where}.device", f"expected a device implemented in this build "
                                  f"({', '.join(implemented_devices())}), got {nic.device!r} (planned)")
    if not device.offered_on(host.hypervisor):
        yield (f"{where}.device", f"expected a device {host.name} (hypervisor: {host.hypervisor}) can host, "
                                  f"got {nic.device!r}, which {device.needs()}")
    entry = registry().get(nic.device)
    variants = entry.variants if entry else ()
    if nic.variant is not None and nic.variant not in variants:
        choices = f"one of {', '.join(variants)}" if variants else "no variant"
        yield f"{where}.variant", f"expected {choices} for {nic.device}, got {nic.variant!r}"
    drivers = [d.__module__.rsplit(".", 1)[-1] for d in pci_drivers().get(entry.pci_id if entry else None, ())]
    if nic.guest_driver is not None and nic.guest_driver not in drivers:
        yield (f"{where}.guest_driver", f"expected one of the guest drivers that bind {nic.device} "
                                        f"({', '.join(drivers) or 'none'}), got {nic.guest_driver!r}")


def _coalesces(device: str) -> bool:
    """Whether the device's guest driver implements set_coalesce."""
    pci_id = registry()[device].pci_id
    return any(hasattr(driver, "set_coalesce") for driver in pci_drivers().get(pci_id, ()))


def pci_address(host: Host, nic: str) -> str:
    """The host PCI address of a physical NIC: each on its own bus from 03, as
    behind a root port."""
    index = next(j for j, p in enumerate(host.nics) if p.name == nic)
    return f"0000:{3 + index:02x}:00.0"


def _uplink_problems(nics: list[tuple[str, Vm, VmNic]], hosts: dict[str, Host]) -> Iterator[tuple[str, str]]:
    """A passed-through port belongs to one VM NIC; SR-IOV NICs share a port's VFs."""
    users: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for where, vm, nic in nics:
        if nic.uplink is None:
            continue
        taken = users.setdefault((vm.host, nic.uplink), [])
        if taken and "passthrough" in (nic.model, *(model for _, model, _ in taken)):
            address = pci_address(hosts[vm.host], nic.uplink)
            yield (f"{where}.uplink", f"expected a physical NIC free for pass-through, got {nic.uplink!r} "
                                      f"({address}), already assigned to {taken[0][2]} ({taken[0][0]}); "
                                      f"cannot also assign it to {vm.name}")
        num_vfs = next(p.num_vfs for p in hosts[vm.host].nics if p.name == nic.uplink)
        if nic.model == "passthrough" and num_vfs:
            yield (f"{where}.uplink", f"expected a physical NIC free for pass-through, got {nic.uplink!r} "
                                      f"({pci_address(hosts[vm.host], nic.uplink)}), whose {num_vfs} VFs its host's "
                                      f"PF driver holds it for")
        if nic.model == "sriov" and len(taken) >= num_vfs:
            yield (f"{where}.uplink", f"expected a physical NIC with a free VF, got {nic.uplink!r} "
                                      f"(num_vfs {num_vfs}, all taken)")
        taken.append((where, nic.model, vm.name))


def _workload_problems(
    where: str, w: Workload, vms: dict[str, Vm], hosts: dict[str, Host]
) -> Iterator[tuple[str, str]]:
    names = ", ".join(vms)
    if w.src not in vms:
        yield f"{where}.src", f"expected one of the VMs ({names}), got {w.src!r}"
        return
    if w.type == "memory_dirty":
        yield from _dirty_problems(where, w, vms[w.src])
        return
    for field in ("dirty_mib_s", "working_set_mb"):
        if getattr(w, field) is not None:
            yield f"{where}.{field}", f"expected no {field} for a {w.type} workload (only memory_dirty takes one)"
    if w.dst is None:
        yield f"{where}.dst", f"expected a destination VM or '{WIRE}' (missing)"
        return
    if w.dst != WIRE and w.dst not in vms:
        yield f"{where}.dst", f"expected one of the VMs ({names}) or '{WIRE}', got {w.dst!r}"
    if w.dst == w.src:
        yield f"{where}.dst", f"expected a VM other than the source, got {w.dst!r}"
    src = vms[w.src]
    if not src.nics:
        yield f"{where}.src", f"expected a VM with a NIC, got {w.src!r} (it has none)"
    if w.dst == WIRE and not hosts[src.host].nics:
        yield f"{where}.dst", f"expected a VM: '{WIRE}' needs a physical NIC on {src.host}, which has none"
    elif w.dst == WIRE and not any(n.uplink for n in src.nics) and not bridge_port(src.host, vms, hosts):
        yield (f"{where}.dst", f"expected a VM: '{WIRE}' needs a physical NIC that {w.src} owns or that "
                               f"{src.host} can bridge, and every NIC of {src.host} is assigned")
    if w.dst != WIRE and not {n.ip.network for n in src.nics} & {n.ip.network for n in vms[w.dst].nics}:
        yield (f"{where}.dst", f"expected a VM with a NIC in a subnet of {w.src} ({_subnets(src)}), "
                               f"got {w.dst!r} ({_subnets(vms[w.dst]) or 'no NIC'})")
    if w.warmup_ms >= w.duration_ms:
        yield (f"{where}.warmup_ms", f"expected less than duration_ms ({_number(w.duration_ms)}): throughput is "
                                     f"measured after the warm-up, got {_number(w.warmup_ms)}")
    for field, kind in (("message_size", "tcp_stream"), ("request_size", "tcp_rr"), ("response_size", "tcp_rr")):
        if getattr(w, field) is not None and w.type != kind:
            yield f"{where}.{field}", f"expected no {field} for a {w.type} workload (only {kind} takes one)"
    if w.count is not None and w.type != "ping":
        yield f"{where}.count", f"expected no count for a {w.type} workload (only ping takes one), got {w.count}"
    elif w.count is not None and w.count > w.duration_ms * PINGS_PER_MS:
        yield (f"{where}.count", f"expected at most {int(w.duration_ms * PINGS_PER_MS)} echo requests (one per "
                                 f"microsecond of duration_ms, {_number(w.duration_ms)}), got {w.count}")


def bridge_port(host: str, vms: dict[str, Vm], hosts: dict[str, Host]) -> str | None:
    """The physical NIC ``host`` bridges its software-model VMs onto: the
    first that no VM NIC is assigned and that has no VFs, else the first
    with VFs (its PF, in the default pool, shares it with the VFs)."""
    taken = {n.uplink for vm in vms.values() if vm.host == host for n in vm.nics}
    ports = hosts[host].nics
    return next((nic.name for nic in ports if nic.name not in taken and not nic.num_vfs),
                next((nic.name for nic in ports if nic.num_vfs), None))


def _subnets(vm: Vm) -> str:
    return ", ".join(str(nic.ip.network) for nic in vm.nics)
