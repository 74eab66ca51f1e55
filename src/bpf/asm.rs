//! Owns the few eBPF instructions lbctl writes by hand: the `bpf_insn`
//! layout the kernel expects (`struct bpf_insn`: opcode, dst/src register
//! nibbles, 16-bit offset, 32-bit immediate) and one constructor per
//! instruction form the sockmap verdict program uses. No general
//! assembler: a program is a `Vec<Insn>` built from these, and the kernel's
//! verifier is the judge of it.

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode (class | size/op | source/mode).
    pub code: u8,
    /// Destination register in the low nibble, source in the high one.
    pub regs: u8,
    /// Signed offset (jumps, memory).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

/// Registers used by name.
pub const R0: u8 = 0;
/// First argument / context on entry.
pub const R1: u8 = 1;
/// Second argument.
pub const R2: u8 = 2;
/// Third argument.
pub const R3: u8 = 3;
/// Fourth argument.
pub const R4: u8 = 4;
/// Callee-saved.
pub const R6: u8 = 6;
/// Read-only frame pointer.
pub const R10: u8 = 10;

// Classes, sizes, modes and operations (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const DW: u8 = 0x18;
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const MOV: u8 = 0xb0;
const JEQ: u8 = 0x10;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;

/// `src_reg` of a 64-bit immediate load that names a map by its fd.
pub const PSEUDO_MAP_FD: u8 = 1;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (dst & 0x0f) | (src << 4),
        off,
        imm,
    }
}

/// `dst = src` (64-bit).
pub fn mov64_reg(dst: u8, src: u8) -> Insn {
    insn(ALU64 | MOV | X, dst, src, 0, 0)
}

/// `dst = imm` (64-bit, sign-extended).
pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(ALU64 | MOV | K, dst, 0, 0, imm)
}

/// `dst += imm` (64-bit).
pub fn add64_imm(dst: u8, imm: i32) -> Insn {
    insn(ALU64 | ADD | K, dst, 0, 0, imm)
}

/// `dst = *(u32 *)(src + off)`.
pub fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(LDX | MEM | W, dst, src, off, 0)
}

/// `*(u64 *)(dst + off) = src`.
pub fn stx_dw(dst: u8, off: i16, src: u8) -> Insn {
    insn(STX | MEM | DW, dst, src, off, 0)
}

/// `if dst == imm goto +off`.
pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(JMP | JEQ | K, dst, 0, off, imm)
}

/// `call helper` (its number in `enum bpf_func_id`).
pub fn call(helper: i32) -> Insn {
    insn(JMP | CALL, 0, 0, 0, helper)
}

/// `exit` (returns r0).
pub fn exit() -> Insn {
    insn(JMP | EXIT, 0, 0, 0, 0)
}

/// `dst = map` (two instructions: a 64-bit immediate load of the map's fd,
/// which the kernel replaces with the map's address at load time).
pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    [
        insn(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_kernel_headers() {
        // As the kernel's own BPF_* macros produce them (bpf_insn.h).
        assert_eq!(mov64_reg(R6, R1).code, 0xbf);
        assert_eq!(mov64_reg(R6, R1).regs, 0x16);
        assert_eq!(mov64_imm(R0, 0).code, 0xb7);
        assert_eq!(add64_imm(R3, -8).code, 0x07);
        assert_eq!(ldx_w(R0, R6, 0).code, 0x61);
        assert_eq!(stx_dw(R10, -8, R0).code, 0x7b);
        assert_eq!(stx_dw(R10, -8, R0).regs, 0x0a);
        assert_eq!(jeq_imm(R0, 0, 3).code, 0x15);
        assert_eq!(call(46).code, 0x85);
        assert_eq!(exit().code, 0x95);
        let [a, b] = ld_map_fd(R2, 7);
        assert_eq!((a.code, a.regs, a.imm), (0x18, 0x12, 7));
        assert_eq!(b, insn(0, 0, 0, 0, 0));
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
