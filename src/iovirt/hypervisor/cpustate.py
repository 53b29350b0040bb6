"""The state a live migration sends while the VM is stopped besides its
pages and its NICs: each vCPU's registers, LAPIC page, MSRs and FPU/XSAVE
area, and the platform's interrupt controllers and timers, as the
hypervisor's save records hold them.

KVM (QEMU reads them with one ioctl each, ``kvm_arch_get_registers``; sizes
from Linux arch/x86/include/uapi/asm/kvm.h):

- ``struct kvm_regs``: 18 u64 (rax..r15, rip, rflags) = 144 bytes
- ``struct kvm_sregs``: 8 ``kvm_segment`` of 24, 2 ``kvm_dtable`` of 16,
  cr0 cr2 cr3 cr4 cr8 efer apic_base, a 256-bit interrupt bitmap = 312
- ``struct kvm_lapic_state``: ``regs[KVM_APIC_REG_SIZE]``, 0x400 = 1024
- ``struct kvm_msrs``: nmsrs and pad (8), then 16 per ``kvm_msr_entry``
- ``struct kvm_xsave``: ``region[1024]`` u32 = 4096
- ``struct kvm_xcrs`` (8 + 16 x 16 + 128 = 392), ``kvm_vcpu_events`` (64),
  ``kvm_debugregs`` (128), ``kvm_mp_state`` (4)
- per VM: two ``kvm_pic_state`` (16), ``kvm_ioapic_state`` (24 pins: 216),
  ``kvm_pit_state2`` (112), ``kvm_clock_data`` (48)

Xen HVM (``xc_domain_save`` takes one ``XEN_DOMCTL_gethvmcontext`` buffer;
xen/include/public/arch-x86/hvm/save.h):

- per vCPU: CPU (``hvm_hw_cpu``, 1032), LAPIC (24), LAPIC_REGS (1024),
  MTRR (240), CPU_XSAVE (24 + the XSAVE area), VMCE_VCPU (24), TSC_ADJUST (8)
- per domain: HEADER (24), PIC (8, twice), IOAPIC (48 pins: 400), PCI_IRQ
  (16), ISA_IRQ (8), PCI_LINK (8), PIT (56), RTC (16), HPET (1048), PMTIMER (8)

Xen PV (the libxc migration v2 stream, REC_TYPE_* of tools/libs/guest/xg_sr_stream_format.h):

- per vCPU: X86_PV_VCPU_BASIC, ``vcpu_guest_context`` of
  xen/include/public/arch-x86/xen.h on x86_64: fpu_ctxt 512, flags 8,
  user_regs 200, trap_ctxt 256 x 16, ldt 16, gdt_frames 128, gdt_ents 8,
  kernel_ss/sp 16, ctrlreg and debugreg 128, three callbacks 24, vm_assist 8,
  fs/gs bases 24 = 5168; X86_PV_VCPU_XSAVE (xcr0, xcr0_accum, the area)
- per domain: X86_PV_INFO (8), X86_PV_P2M_FRAMES (8 + 8 per frame of the
  guest's physical-to-machine table, 512 entries a frame), SHARED_INFO (the
  4 KiB page holding the event channels' pending and mask bits),
  X86_TSC_INFO (24)

Every record is framed as Xen's ``hvm_save_descriptor`` (typecode u16,
instance u16, length u32); an END record closes the stream.  The bytes are
the records' layouts: zero where the model keeps no such register, the LAPIC
page carrying the APIC ID, ISR and IRR (Intel SDM vol. 3, 11.4.1 and
11.8.4)."""

from __future__ import annotations

import struct

from ..devices.vmstate import StateError
from .vm import VM

KVM_MSRS = 90   # QEMU's kvm_put_msrs on an Intel guest: 8 syscall/sysenter, 4 TSC, PAT, MISC_ENABLE, 5 kvmclock
                # and PV, 28 MTRR (def type, 11 fixed, 8 base/mask pairs), 42 MCE (MCG_STATUS, MCG_CTL, 10 banks
                # of 4, MCE_BANKS_DEF), SPEC_CTRL
XSAVE_AREA = 512 + 64 + 256     # legacy x87/SSE region, XSAVE header, AVX's YMM_Hi128 (SDM vol. 1, 13.4, 13.5.3)
P2M_PER_FRAME = 4096 // 8       # unsigned long entries in one frame of the PV p2m table

# (record name, typecode, length): per vCPU, then once per VM
KVM_VCPU = (("regs", 1, 144), ("sregs", 2, 312), ("lapic", 3, 1024), ("msrs", 4, 8 + 16 * KVM_MSRS),
            ("xsave", 5, 4096), ("xcrs", 6, 392), ("vcpu_events", 7, 64), ("debugregs", 8, 128),
            ("mp_state", 9, 4))
KVM_PLATFORM = (("pic_master", 10, 16), ("pic_slave", 11, 16), ("ioapic", 12, 216), ("pit2", 13, 112),
                ("clock", 14, 48))
XEN_HVM_VCPU = (("CPU", 2, 1032), ("LAPIC", 5, 24), ("LAPIC_REGS", 6, 1024), ("MTRR", 14, 240),
                ("CPU_XSAVE", 16, 24 + XSAVE_AREA), ("VMCE_VCPU", 18, 24), ("TSC_ADJUST", 19, 8))
XEN_HVM_PLATFORM = (("HEADER", 1, 24), ("PIC", 3, 8), ("PIC", 3, 8), ("IOAPIC", 4, 400), ("PCI_IRQ", 7, 16),
                    ("ISA_IRQ", 8, 8), ("PCI_LINK", 9, 8), ("PIT", 10, 56), ("RTC", 11, 16), ("HPET", 12, 1048),
                    ("PMTIMER", 13, 8))
XEN_PV_VCPU = (("X86_PV_VCPU_BASIC", 0x04, 5168), ("X86_PV_VCPU_XSAVE", 0x06, 16 + XSAVE_AREA))
XEN_PV_PLATFORM = (("X86_PV_INFO", 0x02, 8), ("X86_PV_P2M_FRAMES", 0x03, None), ("SHARED_INFO", 0x07, 4096),
                   ("X86_TSC_INFO", 0x08, 24))
LAYOUTS = {"kvm": (KVM_VCPU, KVM_PLATFORM), "xen-hvm": (XEN_HVM_VCPU, XEN_HVM_PLATFORM),
           "xen-pv": (XEN_PV_VCPU, XEN_PV_PLATFORM)}
LAPIC_PAGES = ("lapic", "LAPIC_REGS")
# how many calls fetch (or load) the state: an ioctl a record and vCPU on KVM; one
# XEN_DOMCTL_gethvmcontext for an HVM domain; a domctl a vCPU record on PV
CALLS = {"kvm": lambda records, vcpus: records, "xen-hvm": lambda records, vcpus: 1,
         "xen-pv": lambda records, vcpus: vcpus * len(XEN_PV_VCPU)}

DESCRIPTOR = struct.Struct("<HHI")       # hvm_save_descriptor: typecode, instance, length
END = DESCRIPTOR.pack(0, 0, 0)
APIC_ID, APIC_ISR, APIC_IRR = 0x20, 0x100, 0x200


def _layout(platform: str, vcpus: int, pages: int) -> list[tuple[str, int, int, int]]:
    """(name, typecode, instance, length) of every record, in stream order."""
    if platform not in LAYOUTS:
        raise ValueError(f"no save records for platform {platform!r} (one of {', '.join(LAYOUTS)})")
    per_vcpu, platform_records = LAYOUTS[platform]
    out, seen = [], {}
    for name, code, length in platform_records:
        if length is None:                          # the p2m frame list: 8 bytes a frame, after its header
            length = 8 + 8 * -(-pages // P2M_PER_FRAME)
        out.append((name, code, seen.get(code, 0), length))
        seen[code] = seen.get(code, 0) + 1
    out += [(name, code, index, length) for index in range(vcpus) for name, code, length in per_vcpu]
    return out


def _lapic_page(vm: VM, index: int) -> bytes:
    """The vCPU's APIC register page: ID, and the in-service and requested
    vectors as 8 registers of 32 bits each 16 bytes apart."""
    page = bytearray(1024)
    struct.pack_into("<I", page, APIC_ID, index << 24)
    chip = vm.irqchip
    requested = [v for v in chip.irr if chip.dest.get(v, 0) == index]
    for base, vectors in ((APIC_ISR, vm.vcpus[index].in_service), (APIC_IRR, requested)):
        for vector in vectors:
            if 0 <= vector < 256:
                at = base + (vector >> 5) * 16
                struct.pack_into("<I", page, at, struct.unpack_from("<I", page, at)[0] | 1 << (vector & 31))
    return bytes(page)


def save(vm: VM, platform: str) -> bytes:
    """The stopped VM's vCPU and platform records, as one stream."""
    out = bytearray()
    for name, code, instance, length in _layout(platform, len(vm.vcpus), vm.mem.size >> 12):
        body = _lapic_page(vm, instance) if name in LAPIC_PAGES else bytes(length)
        out += DESCRIPTOR.pack(code, instance, length) + body
    return bytes(out + END)


def calls(platform: str, vcpus: int) -> int:
    """Ioctls or hypercalls that fetch (and, on the target, load) the records."""
    return CALLS[platform](len(_layout(platform, vcpus, 0)), vcpus)


def check(vm: VM, platform: str, blob: bytes) -> None:
    """Decode the stream against ``vm`` (the target, with the same vCPUs and
    RAM): every record present, in order, of its length; then END."""
    at = 0
    for name, code, instance, length in _layout(platform, len(vm.vcpus), vm.mem.size >> 12):
        if len(blob) < at + DESCRIPTOR.size:
            raise StateError(f"{platform} state: truncated before {name}[{instance}]")
        got = DESCRIPTOR.unpack_from(blob, at)
        if got != (code, instance, length):
            raise StateError(f"{platform} state: record {got} where {name}[{instance}] "
                             f"({code}, {instance}, {length}) belongs")
        at += DESCRIPTOR.size + length
    if blob[at:] != END:
        raise StateError(f"{platform} state: {len(blob) - at} bytes where the END record belongs")
