//! The slots of a worker thread's memos: values a thread keeps for its next requests
//! (request keys, lookup commands, decoded entries), each memo a
//! `thread_local!` of [`Slots`] picked by a hash. A memo never trusts its slot: the
//! caller's `find` compares what the value was made from, whole, and a slot taken by
//! another value is only a miss. No lock: a thread reads and writes its own. A slot in
//! use (a memo re-entered while it is borrowed) or a thread being torn down is a miss,
//! and nothing is kept.

use std::cell::RefCell;
use std::thread::LocalKey;

/// One memo's slots on one thread, made on first use.
pub(crate) type Slots<T> = RefCell<Vec<Option<T>>>;

/// What `find` makes of the value in slot `index` of `memo`, if there is one and `find`
/// accepts it.
pub(crate) fn find<T: 'static, R>(
    memo: &'static LocalKey<Slots<T>>,
    index: usize,
    find: impl FnOnce(&T) -> Option<R>,
) -> Option<R> {
    memo.try_with(|slots| {
        let slots = slots.try_borrow().ok()?;
        find(slots.get(index)?.as_ref()?)
    })
    .ok()
    .flatten()
}

/// Keeps `value` in slot `index` of `memo`, which has `count` slots, in place of what was
/// there.
pub(crate) fn keep<T: 'static>(
    memo: &'static LocalKey<Slots<T>>,
    count: usize,
    index: usize,
    value: T,
) {
    let _ = memo.try_with(|slots| {
        let Ok(mut slots) = slots.try_borrow_mut() else {
            return;
        };
        if slots.is_empty() {
            slots.resize_with(count, || None);
        }
        if let Some(place) = slots.get_mut(index) {
            *place = Some(value);
        }
    });
}
