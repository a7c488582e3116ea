//! The XDP object's stack as Debian 12's 6.1 verifier counts it, read from
//! the ELF on the host, so a change that would make 6.1 refuse the program
//! fails in seconds instead of in the emulated kernel matrix.
//!
//! 6.1's `check_max_stack_depth` walks every chain of BPF-to-BPF calls from
//! each program's entry and adds each frame's depth rounded up to 32 bytes
//! (an empty frame counts as 32); more than 512 is refused with "combined
//! stack size of N calls is M. Too large". Later kernels round to 16 when
//! the program is JIT-compiled: 6.1's count is the stricter one.
//!
//! A frame's depth is the lowest stack address its instructions touch:
//! loads and stores off r10, and pointers made from r10 (`rX = r10; rX +=
//! -k`), which helpers write through; a pointer's block is counted from its
//! start, as the verifier does for a helper's memory argument.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind};

/// The verifier's limit for the whole chain.
pub const MAX_STACK: u32 = 512;

/// One function of the object: where it is and what it needs.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    /// Deepest byte below r10 it touches.
    pub depth: u32,
    /// Functions it calls (BPF-to-BPF), by name.
    pub calls: Vec<String>,
}

/// The deepest chain from one entry point.
#[derive(Debug, Clone)]
pub struct Chain {
    /// (function, its depth) from the entry down.
    pub frames: Vec<(String, u32)>,
    /// The chain as 6.1 counts it.
    pub counted: u32,
}

/// 6.1's rounding of one frame.
pub fn counted_frame(depth: u32) -> u32 {
    depth.max(1).div_ceil(32) * 32
}

/// Every function of every code section, by name.
pub fn functions(elf: &[u8]) -> Result<BTreeMap<String, Function>> {
    let file = object::File::parse(elf).context("parsing the XDP object")?;
    // Every function by (section, address): calls name their target so.
    let mut by_place = BTreeMap::new();
    for symbol in file.symbols().filter(|s| s.kind() == object::SymbolKind::Text) {
        if let Some(section) = symbol.section_index() {
            by_place.insert((section.0, symbol.address()), symbol.name()?.to_string());
        }
    }
    let mut out = BTreeMap::new();
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let code = section.data().context("reading a code section")?;
        // Calls resolved by relocation: instruction offset -> target.
        let mut relocated = BTreeMap::new();
        for (offset, reloc) in section.relocations() {
            if let RelocationTarget::Symbol(index) = reloc.target() {
                let symbol = file.symbol_by_index(index)?;
                relocated.insert(offset, symbol);
            }
        }
        let mut symbols: Vec<_> = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()) && s.kind() == object::SymbolKind::Text)
            .collect();
        symbols.sort_by_key(|s| s.address());
        for symbol in &symbols {
            let start = symbol.address() as usize;
            let end = (start + symbol.size() as usize).min(code.len());
            let mut f = Function { name: symbol.name()?.to_string(), depth: 0, calls: vec![] };
            let mut from_r10 = [None::<i64>; 11];
            let mut pc = start;
            while pc + 8 <= end {
                let insn = &code[pc..pc + 8];
                let (opcode, dst, src) = (insn[0], (insn[1] & 0x0f) as usize, (insn[1] >> 4) as usize);
                let off = i16::from_le_bytes([insn[2], insn[3]]) as i64;
                let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) as i64;
                let mut touched = None;
                match opcode & 0x07 {
                    // LDX: base in src.
                    0x01 if src == 10 => touched = Some(off),
                    // ST / STX: base in dst.
                    0x02 | 0x03 if dst == 10 => touched = Some(off),
                    _ => {}
                }
                if opcode == 0x85 && src == 1 {
                    let target = match relocated.get(&(pc as u64)) {
                        // Against a section symbol, the immediate counts
                        // instructions from the section's start, less one.
                        Some(sym) if sym.kind() == object::SymbolKind::Section => sym
                            .section_index()
                            .and_then(|target| by_place.get(&(target.0, ((imm + 1) * 8) as u64)))
                            .cloned(),
                        Some(sym) => sym.name().ok().map(str::to_string),
                        None => by_place.get(&(section.index().0, (pc as i64 + 8 + imm * 8) as u64)).cloned(),
                    };
                    match target {
                        Some(name) => f.calls.push(name),
                        None => bail!("{}: a call at byte {pc} to nowhere known", f.name),
                    }
                }
                // Pointers made from r10: `rX = r10`, then `rX += k`;
                // any other write to rX ends it.
                let class = opcode & 0x07;
                if dst < 11 && matches!(class, 0x01 | 0x04 | 0x07) || opcode == 0x18 {
                    from_r10[dst] = match opcode {
                        0xbf if src == 10 => Some(0),
                        0xbf => from_r10.get(src).copied().flatten(),
                        0x07 => from_r10[dst].map(|k| k + imm),
                        _ => None,
                    };
                    if let Some(k) = from_r10[dst] {
                        touched = Some(touched.map_or(k, |t: i64| t.min(k)));
                    }
                }
                if opcode == 0x85 {
                    // A call clobbers r0-r5.
                    from_r10[..6].fill(None);
                }
                if let Some(t) = touched.filter(|t| *t < 0) {
                    f.depth = f.depth.max((-t) as u32);
                }
                // LD_IMM64 takes two slots.
                pc += if opcode == 0x18 { 16 } else { 8 };
            }
            out.insert(f.name.clone(), f);
        }
    }
    Ok(out)
}

/// `name` for people: a Rust v0 symbol's last two path segments
/// (`forward::lookup`), anything else as it is.
pub fn readable(name: &str) -> String {
    if !name.starts_with("_R") {
        return name.to_string();
    }
    let (mut segments, bytes, mut i) = (vec![], name.as_bytes(), 2);
    while i < bytes.len() {
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            i += 1;
            continue;
        }
        let len: usize = name[i..i + digits].parse().unwrap_or(0);
        let start = i + digits;
        if len == 0 || start + len > bytes.len() {
            break;
        }
        segments.push(&name[start..start + len]);
        i = start + len;
    }
    match segments.as_slice() {
        [.., a, b] => format!("{a}::{b}"),
        _ => name.to_string(),
    }
}

/// The deepest chain from `entry`, as 6.1 counts it.
pub fn deepest_chain(functions: &BTreeMap<String, Function>, entry: &str) -> Result<Chain> {
    fn walk(functions: &BTreeMap<String, Function>, name: &str, seen: &mut Vec<String>) -> Result<Chain> {
        let f = functions.get(name).with_context(|| format!("no function {name} in the object"))?;
        if seen.iter().any(|s| s == name) {
            bail!("recursion through {name}: the verifier refuses it");
        }
        seen.push(name.to_string());
        let mut below = Chain { frames: vec![], counted: 0 };
        for callee in &f.calls {
            let chain = walk(functions, callee, seen)?;
            if chain.counted > below.counted {
                below = chain;
            }
        }
        seen.pop();
        let mut frames = vec![(f.name.clone(), f.depth)];
        frames.extend(below.frames);
        Ok(Chain { frames, counted: counted_frame(f.depth) + below.counted })
    }
    walk(functions, entry, &mut vec![])
}
