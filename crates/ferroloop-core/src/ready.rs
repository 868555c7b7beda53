//! The ready queue: callbacks to run, in the order they were scheduled.
//!
//! A turn runs exactly the callbacks that were ready when it started (as CPython's `_run_once`
//! does), so a callback that schedules another with `call_soon` cannot starve I/O polling:
//! [`ReadyQueue::turn_len`] is taken once per turn and that many items are popped.

use std::collections::VecDeque;

/// A FIFO of ready callbacks.
#[derive(Debug)]
pub struct ReadyQueue<T> {
    items: VecDeque<T>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::with_capacity(64),
        }
    }
}

impl<T> ReadyQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a callback to run after every one already queued.
    #[inline]
    pub fn push(&mut self, item: T) {
        self.items.push_back(item);
    }

    /// Takes the oldest callback.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// How many callbacks the turn starting now must run.
    #[inline]
    pub fn turn_len(&self) -> usize {
        self.items.len()
    }

    /// Number of queued callbacks.
    #[inline]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Drops every queued callback (`loop.close()`), returning them so the caller can drop them
    /// where it is safe to (for Python objects: with the GIL held and no borrow outstanding).
    pub fn take_all(&mut self) -> VecDeque<T> {
        std::mem::take(&mut self.items)
    }

    /// Iterates over the queued callbacks, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }
}
