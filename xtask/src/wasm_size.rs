//! Where a wasm module's bytes are: its sections, and the size of each function's body by
//! the name the module's `name` section gives it, summed per crate (tacit-rm per module).
//! `web::build_pkg` runs it on the wasm-bindgen output (names still in; wasm-opt drops them)
//! and writes the result into the package's size report. A few hundred lines of the binary
//! format instead of a tool to install: sections, imports (to number the functions), code
//! bodies and function names are all it reads.

use std::collections::BTreeMap;

use crate::Result;

#[derive(Debug, Default)]
pub struct Module {
    /// `(section, bytes)` in file order; custom sections as `custom "name"`.
    pub sections: Vec<(String, u64)>,
    /// `(name, body bytes)` of every defined function (not imports), in index order.
    pub functions: Vec<(String, u64)>,
    /// The features of the `target_features` custom section (`+simd128` → `simd128`).
    pub features: Vec<String>,
}

impl Module {
    pub fn has_custom(&self, name: &str) -> bool {
        let want = format!("custom \"{name}\"");
        self.sections.iter().any(|(s, _)| *s == want)
    }

    pub fn section_bytes(&self, name: &str) -> u64 {
        self.sections
            .iter()
            .filter(|(s, _)| s == name)
            .map(|(_, b)| b)
            .sum()
    }

    /// Code bytes per crate (tacit-rm per top-level module), largest first.
    pub fn by_crate(&self) -> Vec<(String, u64)> {
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        for (name, bytes) in &self.functions {
            *sums.entry(owner(name)).or_default() += bytes;
        }
        let mut rows: Vec<_> = sums.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    /// The `n` largest functions, largest first.
    pub fn largest(&self, n: usize) -> Vec<(String, u64)> {
        let mut rows = self.functions.clone();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(n);
        rows
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self.bytes.get(self.at).ok_or("wasm: unexpected end")?;
        self.at += 1;
        Ok(b)
    }

    fn leb(&mut self) -> Result<u64> {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let b = self.byte()?;
            if shift < 64 {
                value |= u64::from(b & 0x7f) << shift;
            }
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|&e| e <= self.bytes.len())
            .ok_or("wasm: a length runs past the end")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn name(&mut self) -> Result<String> {
        let n = self.leb()?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    fn limits(&mut self) -> Result {
        let flags = self.byte()?;
        self.leb()?;
        if flags & 1 != 0 {
            self.leb()?;
        }
        Ok(())
    }

    /// A section or subsection: its id byte, then its contents (LEB128 size, then that many
    /// bytes) as a reader of their own.
    fn section(&mut self) -> Result<(u8, Reader<'a>)> {
        let id = self.byte()?;
        let size = self.leb()?;
        Ok((
            id,
            Reader {
                bytes: self.take(size)?,
                at: 0,
            },
        ))
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }
}

const SECTIONS: [&str; 14] = [
    "custom",
    "type",
    "import",
    "function",
    "table",
    "memory",
    "global",
    "export",
    "start",
    "element",
    "code",
    "data",
    "datacount",
    "tag",
];

pub fn parse(bytes: &[u8]) -> Result<Module> {
    if bytes.get(..4) != Some(b"\0asm") {
        return Err("not a wasm module".into());
    }
    let mut r = Reader { bytes, at: 8 };
    let mut module = Module::default();
    let mut imported_functions = 0u64;
    let mut bodies = Vec::new();
    let mut names = BTreeMap::new();
    while !r.done() {
        let (id, mut s) = r.section()?;
        let size = s.bytes.len() as u64;
        let label = match id {
            0 => {
                let name = s.name()?;
                if name == "name" {
                    function_names(&mut s, &mut names)?;
                } else if name == "target_features" {
                    for _ in 0..s.leb()? {
                        let _prefix = s.byte()?;
                        module.features.push(s.name()?);
                    }
                }
                format!("custom \"{name}\"")
            }
            2 => {
                for _ in 0..s.leb()? {
                    s.name()?;
                    s.name()?;
                    match s.byte()? {
                        0 => {
                            s.leb()?;
                            imported_functions += 1;
                        }
                        1 => {
                            s.byte()?;
                            s.limits()?;
                        }
                        2 => s.limits()?,
                        3 => {
                            s.byte()?;
                            s.byte()?;
                        }
                        4 => {
                            s.byte()?;
                            s.leb()?;
                        }
                        k => return Err(format!("wasm: unknown import kind {k}")),
                    }
                }
                SECTIONS[2].to_string()
            }
            10 => {
                for _ in 0..s.leb()? {
                    let start = s.at;
                    let n = s.leb()?;
                    s.take(n)?;
                    bodies.push((s.at - start) as u64);
                }
                SECTIONS[10].to_string()
            }
            id => SECTIONS
                .get(usize::from(id))
                .map_or_else(|| format!("section {id}"), |s| s.to_string()),
        };
        module.sections.push((label, size));
    }
    module.functions = bodies
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let index = imported_functions + i as u64;
            let name = names
                .remove(&index)
                .unwrap_or_else(|| format!("function {index}"));
            (name, bytes)
        })
        .collect();
    Ok(module)
}

/// Subsection 1 of the `name` section: function index → name.
fn function_names(s: &mut Reader, names: &mut BTreeMap<u64, String>) -> Result {
    while !s.done() {
        let (kind, mut sub) = s.section()?;
        if kind == 1 {
            for _ in 0..sub.leb()? {
                let index = sub.leb()?;
                names.insert(index, sub.name()?);
            }
        }
    }
    Ok(())
}

/// `name` without rustc's symbol hash (`::h` and 16 hex digits) or `[hash]` disambiguators.
pub fn without_hash(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        match tail.find(']') {
            Some(j) if j >= 8 && tail[..j].chars().all(|c| c.is_ascii_hexdigit()) => {
                rest = &tail[j + 1..];
            }
            _ => {
                out.push('[');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    match out.rfind("::h") {
        Some(i) if out.len() - i == 19 && out[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => {
            out.truncate(i);
            out
        }
        _ => out,
    }
}

/// The crate a function's code belongs to, from its demangled name: the first path of
/// `krate::…` or of `<krate::Type as …>` (the trait's crate when the type is a primitive or
/// a generic parameter), with rustc's `[hash]` disambiguators dropped; tacit-rm's own code by
/// module (`tacit_rm::sync`). Names without a path (wasm-bindgen's exports and shims,
/// `memcpy`, …) are `(exports and shims)`.
pub fn owner(name: &str) -> String {
    /// rustc's symbol hash, the last segment of a legacy-mangled name: `h` and hex digits.
    fn is_hash(segment: &str) -> bool {
        segment
            .strip_prefix('h')
            .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
    }
    fn krate(path: &str) -> Option<&str> {
        let path = path.trim_start_matches(['<', '&', '*', '[', '(', ' ']);
        let path = ["mut ", "const ", "dyn "]
            .iter()
            .fold(path, |p, k| p.strip_prefix(k).unwrap_or(p))
            .trim_start_matches(['<', '&', '*', '[', '(', ' ']);
        let end = path.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
        let (ident, rest) = path.split_at(end);
        let rest = match rest.strip_prefix('[') {
            Some(r) => &r[r.find(']')? + 1..],
            None => rest,
        };
        let rest = rest.strip_prefix("::")?;
        if ident != "tacit_rm" {
            return Some(ident);
        }
        let module_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        // A leaf item of the crate root (`tacit_rm::train`) stays `tacit_rm`.
        let module = &rest[..module_end];
        // (`tacit_rm::train::{{closure}}::h…` is a function, not a module.)
        let after = &rest[module_end..];
        let is_module = after.starts_with("::")
            && !after.starts_with("::{")
            && !is_hash(&after[2..])
            && module.chars().next().is_some_and(|c| c.is_lowercase());
        Some(if is_module {
            &path[..end + 2 + module_end]
        } else {
            ident
        })
    }
    if let Some(inner) = name.strip_prefix('<') {
        // `<Type as Trait>::f`: the type's crate, else the trait's.
        let (ty, tr) = inner.split_once(" as ").unwrap_or((inner, ""));
        if let Some(k) = krate(ty).or_else(|| krate(tr)) {
            return k.to_string();
        }
        // `<str>::to_lowercase` and the like: inherent impls of primitive types.
        return "core/alloc (primitive types)".into();
    }
    krate(name).map_or_else(|| "(exports and shims)".into(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::{owner, parse, without_hash};

    #[test]
    fn hashes_are_dropped_from_shown_names() {
        assert_eq!(
            without_hash("tacit_rm::web::Inner::sync::{{closure}}::h59a101337e44ab40"),
            "tacit_rm::web::Inner::sync::{{closure}}"
        );
        assert_eq!(
            without_hash(
                "<dlmalloc[e24a27700634d609]::Dlmalloc<dlmalloc[e24a2770]::System>>::malloc"
            ),
            "<dlmalloc::Dlmalloc<dlmalloc::System>>::malloc"
        );
        assert_eq!(without_hash("<[f64]>::sort::h12"), "<[f64]>::sort::h12");
    }

    #[test]
    fn functions_are_attributed_to_their_crate() {
        let cases = [
            ("core::fmt::Formatter::pad::h01", "core"),
            ("core[c5930c85a12de822]::num::flt2dec::strategy::dragon::format_shortest", "core"),
            ("<dlmalloc[e24a]::dlmalloc::Dlmalloc<dlmalloc[e24a]::sys::System>>::malloc", "dlmalloc"),
            ("tacit_rm::sync::pass::run::{{closure}}::h46", "tacit_rm::sync"),
            ("tacit_rm::train::h12", "tacit_rm"),
            ("tacit_rm::train::{{closure}}::h12", "tacit_rm"),
            ("tacit_rm::trainer::train_async::{{closure}}::hd07c", "tacit_rm::trainer"),
            ("<tacit_rm::sync::pass::Counting<T> as tacit_rm::sync::ports::Transport>::send", "tacit_rm::sync"),
            ("<&mut serde_json::de::Deserializer<R> as serde_core::de::Deserializer>::deserialize_any", "serde_json"),
            ("<T as alloc::vec::spec_from_elem::SpecFromElem>::from_elem::hc2", "alloc"),
            ("<f64 as zmij::private::Sealed>::write_to_zmij_buffer::h8b", "zmij"),
            ("<str>::to_lowercase", "core/alloc (primitive types)"),
            ("rewardmodel_score", "(exports and shims)"),
            ("memcpy", "(exports and shims)"),
        ];
        for (name, want) in cases {
            assert_eq!(owner(name), want, "{name}");
        }
    }

    /// A hand-made module: one imported function, two defined ones named by the name section,
    /// a data section and a target_features section.
    #[test]
    fn sections_bodies_and_names_are_read() {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let section = |m: &mut Vec<u8>, id: u8, body: &[u8]| {
            m.push(id);
            m.push(body.len() as u8);
            m.extend_from_slice(body);
        };
        section(&mut m, 1, &[1, 0x60, 0, 0]); // type: () -> ()
        section(&mut m, 2, b"\x01\x01m\x01f\x00\x00"); // import m.f: func type 0
        section(&mut m, 3, &[2, 0, 0]); // two functions of type 0
        section(&mut m, 10, &[2, 2, 0, 0x0b, 4, 0, 0x01, 0x01, 0x0b]); // bodies of 3 and 5 bytes
        section(&mut m, 11, &[0]); // no data segments
        let mut names = vec![4];
        names.extend_from_slice(b"name");
        // Subsection 1, 10 bytes: a count, then (index, name) twice.
        names.extend_from_slice(&[1, 10, 2, 1, 3, b'o', b'n', b'e', 2, 2, b'a', b'b']);
        section(&mut m, 0, &names);
        let mut features = vec![15];
        features.extend_from_slice(b"target_features");
        features.extend_from_slice(&[1, b'+', 7]);
        features.extend_from_slice(b"simd128");
        section(&mut m, 0, &features);
        let module = parse(&m).unwrap();
        assert_eq!(
            module.functions,
            vec![("one".to_string(), 3), ("ab".to_string(), 5)]
        );
        assert_eq!(module.section_bytes("code"), 9);
        assert_eq!(module.section_bytes("data"), 1);
        assert!(module.has_custom("name"));
        assert_eq!(module.features, vec!["simd128".to_string()]);
        assert!(parse(b"not wasm").is_err());
    }
}
