//! Errors as JS sees them: an `Error` named `TacitError` with a stable `code` property (the
//! crate's [`ErrorCode`](crate::ErrorCode) strings), so that apps branch on `e.code`, never on
//! message text.

use wasm_bindgen::{JsCast, JsValue};

use crate::error::Error;

/// The JS `Error` for `err`.
pub fn to_js(err: Error) -> JsValue {
    let js = js_sys::Error::new(&err.to_string());
    js.set_name("TacitError");
    // Setting a property on a fresh plain object cannot fail; ignore the impossible error
    // rather than unwrap across the boundary.
    let _ = js_sys::Reflect::set(&js, &"code".into(), &err.code().as_str().into());
    js.into()
}

/// A JS exception (from IndexedDB, a callback, …) as a crate error of the given kind.
pub fn describe(value: &JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    if let Some(e) = value.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", e.name(), e.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// serde-wasm-bindgen errors: an options object of the wrong shape.
pub fn from_serde(what: &str, err: serde_wasm_bindgen::Error) -> Error {
    Error::InvalidConfig(format!("{what}: {err}"))
}
