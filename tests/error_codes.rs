//! One list of error codes: the `ErrorCode` union of the package's `.d.ts` (written in
//! `src/web/types.rs`) and the table in the package README must name exactly the codes of
//! `tacit_rm::ErrorCode::ALL`, in the same order, so that an app's `switch (e.code)` and the
//! docs it was written from cannot drift from what the library throws.

use std::path::Path;

use tacit_rm::ErrorCode;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rust_codes() -> Vec<String> {
    ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect()
}

/// The string literals of `export type ErrorCode = | "a" | "b" …;`.
fn typescript_codes(types_rs: &str) -> Vec<String> {
    let start = types_rs
        .find("export type ErrorCode =")
        .expect("src/web/types.rs declares `export type ErrorCode`");
    let union = &types_rs[start..];
    let union = &union[..union.find(';').expect("the ErrorCode union ends with `;`")];
    union
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The first cell of each row of the table in the README's `## Errors` section.
fn readme_codes(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## Errors")
        .expect("the package README has an `## Errors` section");
    let section = &readme[start + 1..];
    let section = match section[1..].find("\n## ") {
        Some(end) => &section[..end + 1],
        None => section,
    };
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l[..l.find('`').expect("a closed code cell")].to_string())
        .collect()
}

#[test]
fn the_declarations_name_every_error_code_of_the_library() {
    let ts = typescript_codes(&read("src/web/types.rs"));
    assert_eq!(ts, rust_codes());
}

#[test]
fn the_package_readme_documents_every_error_code_of_the_library() {
    let readme = readme_codes(&read("src/web/npm/README.md"));
    assert_eq!(readme, rust_codes());
}

#[test]
fn codes_are_distinct_snake_case_names() {
    let codes = rust_codes();
    for (i, code) in codes.iter().enumerate() {
        assert!(
            !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{code:?} is not snake_case"
        );
        assert!(!codes[..i].contains(code), "{code} appears twice");
    }
    // A literal anchor: the list the package shipped with before `wasm_load` was added stays
    // a prefix (codes are never renamed or removed).
    let shipped = [
        "dim_mismatch",
        "non_finite_input",
        "empty_input",
        "unknown_name",
        "invalid_config",
        "corrupt_weights",
        "incompatible_weights",
        "invalid_data",
        "no_gpu",
        "device_lost",
        "io",
        "unknown_option",
        "no_webgpu",
        "busy",
        "closed",
        "storage",
        "network",
        "sync_conflict",
        "sync_unauthorized",
        "sync_rejected",
    ];
    assert_eq!(&codes[..shipped.len()], shipped);
}
