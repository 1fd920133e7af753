//! What an ELF executable needs in order to run: the architecture it was built for and, when it
//! is dynamically linked, its loader and libraries. Read for the executor binary (which nodes
//! can run it) and for every tool (whether the image can).

use object::elf;
use object::read::elf::{ElfFile, FileHeader, ProgramHeader};
use object::{Endian, Endianness, FileKind};

/// An ELF executable's needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// `kubernetes.io/arch` of the machines it runs on.
    pub arch: String,
    /// The dynamic loader it names (`None`: statically linked).
    pub interpreter: Option<String>,
    /// The shared libraries it asks for (`DT_NEEDED`), in the order it names them.
    pub libraries: Vec<String>,
}

/// Whether `data` starts like an ELF file.
pub fn is_elf(data: &[u8]) -> bool {
    data.starts_with(&elf::ELFMAG)
}

/// Reads the needs of the ELF file in `data`; the error says why it is not a usable one.
pub fn needs(data: &[u8]) -> Result<Needs, String> {
    match FileKind::parse(data).map_err(|e| e.to_string())? {
        FileKind::Elf64 => needs_of::<elf::FileHeader64<Endianness>>(data),
        FileKind::Elf32 => needs_of::<elf::FileHeader32<Endianness>>(data),
        other => Err(format!("not an ELF file but {other:?}")),
    }
}

fn needs_of<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<Needs, String> {
    let file = ElfFile::<Elf>::parse(data).map_err(|e| e.to_string())?;
    let endian = file.endian();
    let header = file.elf_header();
    if header.e_type(endian) == elf::ET_REL {
        return Err("an object file, not an executable".to_string());
    }
    let machine = header.e_machine(endian);
    let arch = kubernetes_arch(machine, header.is_class_64(), endian.is_little_endian())
        .ok_or_else(|| format!("machine type {machine} is not one Kubernetes runs"))?;
    let mut interpreter = None;
    for program in file.elf_program_headers() {
        if let Some(path) = program
            .interpreter(endian, data)
            .map_err(|e| e.to_string())?
        {
            interpreter = Some(String::from_utf8_lossy(path).into_owned());
        }
    }
    let dynamic = file
        .elf_section_table()
        .dynamic_table(endian, data)
        .map_err(|e| e.to_string())?;
    let mut libraries = Vec::new();
    for entry in &dynamic {
        if entry.tag == elf::DT_NEEDED {
            let name = dynamic.string(entry).map_err(|e| e.to_string())?;
            libraries.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(Needs {
        arch: arch.to_string(),
        interpreter,
        libraries,
    })
}

/// The `kubernetes.io/arch` (Go's GOARCH) of an ELF machine type.
fn kubernetes_arch(machine: u16, is_64: bool, little_endian: bool) -> Option<&'static str> {
    Some(match (machine, is_64) {
        (elf::EM_X86_64, true) => "amd64",
        (elf::EM_AARCH64, true) => "arm64",
        (elf::EM_PPC64, true) if little_endian => "ppc64le",
        (elf::EM_S390, true) => "s390x",
        (elf::EM_RISCV, true) => "riscv64",
        (elf::EM_386, false) => "386",
        (elf::EM_ARM, false) => "arm",
        _ => return None,
    })
}

/// A copy of the ELF executable `data` relabelled as built for `machine`: a binary for another
/// architecture, for tests, on any host.
#[cfg(test)]
pub fn relabelled(mut data: Vec<u8>, machine: u16) -> Vec<u8> {
    // e_machine, at the same offset in 32- and 64-bit headers; this host is little-endian.
    data[18..20].copy_from_slice(&machine.to_le_bytes());
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_for_this_machine() {
        let me = this_test_binary();
        assert!(is_elf(&me));
        let needs = needs(&me).unwrap();
        let expected = crate::backend::arch::host_arch();
        assert_eq!(needs.arch, expected);
        // Test binaries link glibc dynamically.
        assert!(needs.interpreter.is_some(), "{needs:?}");
        assert!(
            needs.libraries.iter().any(|l| l.starts_with("libc.so")),
            "{needs:?}"
        );
    }

    fn this_test_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn the_machine_type_decides_the_architecture() {
        let needs = needs(&relabelled(this_test_binary(), elf::EM_AARCH64)).unwrap();
        assert_eq!(needs.arch, "arm64");
    }

    #[test]
    fn a_machine_kubernetes_does_not_run_is_refused() {
        let error = needs(&relabelled(this_test_binary(), elf::EM_SPARCV9)).unwrap_err();
        assert!(error.contains("machine type"), "{error}");
    }

    #[test]
    fn text_is_not_elf() {
        assert!(!is_elf(b"#!/bin/sh\n"));
        assert!(needs(b"#!/bin/sh\necho hi\n").is_err());
    }
}
