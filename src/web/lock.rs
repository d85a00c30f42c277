//! One writer per model across the tabs (and workers) of an origin: an exclusive Web Lock
//! (`navigator.locks`) named after the model, held by every call that writes its weights
//! (train, importWeights, reset, forget, sync, delete) from the moment it reads the stored
//! model until its write has committed. A tab that takes the lock after another tab wrote
//! therefore starts from what that tab stored, never from weights it held before.
//!
//! Where there is no `navigator.locks` (node, which has no IndexedDB either; browsers before
//! 2022), [`acquire`] holds nothing: the stored generation guard of `storage.rs` still refuses
//! a write made from stale weights.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use super::error::describe;
use crate::error::{Error, Result};

/// Held while it lives; dropping it releases the lock (a call releases it however it ends).
pub struct Held {
    release: Function,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.release.call0(&JsValue::NULL);
    }
}

/// The lock name of a model's weights (one origin shares one name space with other apps:
/// the prefix keeps ours apart).
fn name(model: &str) -> String {
    format!("tacit-rm/model/{model}")
}

/// `navigator.locks` of a window or a worker, if it has one.
fn manager() -> Option<JsValue> {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let locks = Reflect::get(&navigator, &"locks".into()).ok()?;
    let request = Reflect::get(&locks, &"request".into()).ok()?;
    request.is_function().then_some(locks)
}

/// A promise and the functions that settle it.
fn deferred() -> (Promise, Function, Function) {
    let mut settle = None;
    let promise = Promise::new(&mut |resolve, reject| settle = Some((resolve, reject)));
    // `Promise::new` runs its executor before returning.
    let (resolve, reject) =
        settle.unwrap_or_else(|| (Function::new_no_args(""), Function::new_no_args("")));
    (promise, resolve, reject)
}

/// Waits for the exclusive lock of `model`'s weights; `None` where Web Locks do not exist.
pub async fn acquire(model: &str) -> Result<Option<Held>> {
    let Some(locks) = manager() else {
        return Ok(None);
    };
    // The lock is held until the promise the callback returns settles: `release` settles it.
    let (held_until, release, _) = deferred();
    let (granted, grant, refuse) = deferred();
    let callback = Closure::once_into_js(move |_lock: JsValue| {
        let _ = grant.call0(&JsValue::NULL);
        held_until
    });
    let request: Function = Reflect::get(&locks, &"request".into())
        .and_then(|f| f.dyn_into())
        .map_err(|e| Error::Storage(format!("navigator.locks.request: {}", describe(&e))))?;
    let asked = request
        .call2(&locks, &name(model).into(), &callback)
        .map_err(|e| Error::Storage(format!("navigator.locks.request: {}", describe(&e))))?;
    // A request refused before it was granted (a document no longer fully active) rejects
    // its promise: the call fails instead of waiting forever.
    let on_refused: JsValue = Closure::once_into_js(move |e: JsValue| {
        let _ = refuse.call1(&JsValue::NULL, &e);
    });
    if let Ok(catch) = Reflect::get(&asked, &"catch".into()).and_then(|f| f.dyn_into::<Function>())
    {
        let _ = catch.call1(&asked, &on_refused);
    }
    JsFuture::from(granted)
        .await
        .map_err(|e| Error::Storage(format!("waiting for the model's lock: {}", describe(&e))))?;
    Ok(Some(Held { release }))
}
