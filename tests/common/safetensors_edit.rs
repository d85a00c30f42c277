//! Hand edits of a safetensors file's JSON header, for tests of what a parser must refuse
//! (the `safetensors` crate writes only well-formed files).

/// The header text and the data bytes after it.
pub fn split(bytes: &[u8]) -> (String, &[u8]) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + len]).unwrap().to_string();
    (header, &bytes[8 + len..])
}

/// A file with `header` in place of the original one and the same data.
pub fn join(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// `bytes` with its header passed through `edit`, which must change it.
pub fn edit_header(bytes: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let (header, data) = split(bytes);
    let edited = edit(&header);
    assert_ne!(edited, header, "the edit must change the header");
    join(&edited, data)
}

/// `bytes` with one more F32 tensor of shape [1] named `name`, appended after the data (a
/// well-formed file that carries a tensor the format does not define).
pub fn with_extra_tensor(bytes: &[u8], name: &str) -> Vec<u8> {
    let (header, data) = split(bytes);
    let mut json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&header).unwrap();
    let end = data.len();
    json.insert(
        name.to_string(),
        serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]}),
    );
    let mut data = data.to_vec();
    data.extend(1.5f32.to_le_bytes());
    join(&serde_json::to_string(&json).unwrap(), &data)
}

/// A metadata value as written (`"key":"value"`), replaced by `value`.
pub fn set_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    edit_header(bytes, |h| {
        let (_, tail) = h.split_once(&format!("\"{key}\":\"")).expect("key present");
        let old = &tail[..tail.find('"').unwrap()];
        h.replacen(
            &format!("\"{key}\":\"{old}\""),
            &format!("\"{key}\":\"{value}\""),
            1,
        )
    })
}

/// The metadata block with `"key":"value"` written once more before the real entries (a
/// JSON object with a duplicate key, which a map-based reader silently collapses).
pub fn duplicate_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    edit_header(bytes, |h| {
        h.replacen(
            "\"__metadata__\":{",
            &format!("\"__metadata__\":{{\"{key}\":\"{value}\","),
            1,
        )
    })
}
