//! What the tabs of an origin tell each other about a stored model: a `BroadcastChannel` per
//! model (named `tacit-rm/model/<name>`, like its lock) on which every commit that stores new
//! weights or sync state announces `{ kind: "commit", id, generation }` and every delete
//! `{ kind: "delete", id }`.
//!
//! It spares the scoring calls their IndexedDB read: a persistent model reads its `meta`
//! record before `score`/`rank` only when a message arrived since its last read (see
//! `Inner::refresh` in `mod.rs`), and a delete message closes it at its next call, the
//! synchronous ones too. Nothing depends on a message for correctness: every write still
//! checks the `meta` record in its own transaction (`storage.rs`), so a tab that has not yet
//! heard of another tab's commit may score with the weights it held before that commit,
//! never store over it.
//!
//! Where there is no `BroadcastChannel` (browsers before 2022) or it cannot be made, a model
//! has no channel and reads its `meta` record before every scoring call, as before.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::{Array, Function, Object, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

const COMMIT: &str = "commit";
const DELETE: &str = "delete";

/// The channel name of a model (the prefix keeps ours apart from other apps of the origin).
fn name(model: &str) -> String {
    format!("tacit-rm/model/{model}")
}

/// A new `BroadcastChannel` named after `model`, if the global has the constructor.
fn construct(model: &str) -> Option<JsValue> {
    let ctor = Reflect::get(&js_sys::global(), &"BroadcastChannel".into())
        .ok()?
        .dyn_into::<Function>()
        .ok()?;
    Reflect::construct(&ctor, &Array::of1(&name(model).into())).ok()
}

fn call(port: &JsValue, method: &str, args: &Array) {
    if let Ok(f) = Reflect::get(port, &method.into()).and_then(|f| f.dyn_into::<Function>()) {
        let _ = f.apply(port, args);
    }
}

thread_local! {
    /// The open instances of this tab (or worker), by model name: told of this tab's own
    /// commits and deletes at once, not a task later as the channel would (a page that deletes
    /// a model and then scores with another instance of it gets `closed`, deterministically).
    static OPEN: RefCell<Vec<(String, Weak<Heard>)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on every open instance of `model` in this tab but `except`.
fn each_open(model: &str, except: Option<&Rc<Heard>>, f: impl Fn(&Heard)) {
    let open: Vec<Rc<Heard>> = OPEN.with(|o| {
        o.try_borrow()
            .map(|o| {
                o.iter()
                    .filter(|(n, _)| n == model)
                    .filter_map(|(_, h)| h.upgrade())
                    .collect()
            })
            .unwrap_or_default()
    });
    for h in open
        .iter()
        .filter(|h| except.is_none_or(|e| !Rc::ptr_eq(e, h)))
    {
        f(h);
    }
}

/// What one instance has heard. Updated by the message handler only, which runs as a task of
/// its own: never while the model holds a borrow of it.
#[derive(Default)]
struct Heard {
    /// Messages received so far (of any other instance, in this tab or another).
    received: Cell<u64>,
    /// `received` as it was when the model last started reading its `meta` record.
    checked: Cell<u64>,
    /// Ids of stored models a delete message named.
    deleted: RefCell<Vec<String>>,
}

impl Heard {
    fn heard(&self) {
        self.received.set(self.received.get().wrapping_add(1));
    }

    fn deleted(&self, id: &str) {
        if let Ok(mut d) = self.deleted.try_borrow_mut() {
            d.push(id.to_string());
        }
        self.heard();
    }
}

/// One open model's channel: announces its commits, records what the others announce.
pub struct Channel {
    model: String,
    port: JsValue,
    heard: Rc<Heard>,
    /// Kept alive as long as the channel: the `message` handler.
    _on_message: Closure<dyn FnMut(JsValue)>,
}

impl Channel {
    /// The channel of `model`; `None` where there is no `BroadcastChannel`.
    pub fn open(model: &str) -> Option<Channel> {
        let port = construct(model)?;
        let heard = Rc::new(Heard::default());
        let heard_c = heard.clone();
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let data = Reflect::get(&event, &"data".into()).unwrap_or_default();
            let field = |k: &str| Reflect::get(&data, &k.into()).ok();
            let kind = field("kind").and_then(|k| k.as_string());
            match kind.as_deref() {
                Some(COMMIT) => {}
                Some(DELETE) => {
                    if let Some(id) = field("id").and_then(|i| i.as_string()) {
                        heard_c.deleted(&id);
                        return;
                    }
                }
                // Not ours (another app's channel of the same name, a later format).
                _ => return,
            }
            heard_c.heard();
        });
        if Reflect::set(&port, &"onmessage".into(), on_message.as_ref()).is_err() {
            call(&port, "close", &Array::new());
            return None;
        }
        OPEN.with(|o| {
            if let Ok(mut o) = o.try_borrow_mut() {
                o.retain(|(_, h)| h.strong_count() > 0);
                o.push((model.to_string(), Rc::downgrade(&heard)));
            }
        });
        Some(Channel {
            model: model.to_string(),
            port,
            heard,
            _on_message: on_message,
        })
    }

    /// Whether a message arrived since the model last started reading its `meta` record.
    pub fn stale(&self) -> bool {
        self.heard.received.get() != self.heard.checked.get()
    }

    /// The model starts reading what is stored: what it heard until now is accounted for (a
    /// message arriving during the read makes it stale again).
    pub fn checking(&self) {
        self.heard.checked.set(self.heard.received.get());
    }

    /// The read failed: the next call reads again.
    pub fn recheck(&self) {
        self.heard
            .checked
            .set(self.heard.received.get().wrapping_sub(1));
    }

    /// Whether a delete message named the stored model `id`.
    pub fn deleted(&self, id: &str) -> bool {
        self.heard
            .deleted
            .try_borrow()
            .is_ok_and(|d| d.iter().any(|x| x == id))
    }

    /// Tells the other instances that `id` is stored at `generation` now.
    pub fn announce_commit(&self, id: &str, generation: u64) {
        each_open(&self.model, Some(&self.heard), Heard::heard);
        post(&self.port, COMMIT, id, Some(generation));
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = Reflect::set(&self.port, &"onmessage".into(), &JsValue::NULL);
        call(&self.port, "close", &Array::new());
    }
}

fn post(port: &JsValue, kind: &str, id: &str, generation: Option<u64>) {
    let message = Object::new();
    let _ = Reflect::set(&message, &"kind".into(), &kind.into());
    let _ = Reflect::set(&message, &"id".into(), &id.into());
    if let Some(g) = generation {
        let _ = Reflect::set(&message, &"generation".into(), &JsValue::from_f64(g as f64));
    }
    call(port, "postMessage", &Array::of1(&message));
}

/// Tells every open instance of `model` (this tab's too) that the stored model `id` was
/// deleted. From a channel of its own: `RewardModel.delete` holds no open model. Closing it
/// right after posting is fine: a message is queued to its receivers when it is posted.
pub fn announce_delete(model: &str, id: &str) {
    each_open(model, None, |h| h.deleted(id));
    if let Some(port) = construct(model) {
        post(&port, DELETE, id, None);
        call(&port, "close", &Array::new());
    }
}
