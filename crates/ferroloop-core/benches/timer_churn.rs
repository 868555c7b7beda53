//! Timer heap churn: schedule + cancel + per-turn purge, the `call_later(...).cancel()` pattern
//! (timeouts that rarely fire), plus schedule + fire for comparison.
//!
//! `cargo bench -p ferroloop-core --bench timer_churn`. Prints ns/op; no assertions.

use ferroloop_core::{Callback, TimerHeap};
use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

struct Timer {
    cancelled: Rc<Cell<bool>>,
    scheduled: Rc<Cell<bool>>,
}

impl Callback for Timer {
    fn is_cancelled(&self) -> bool {
        self.cancelled.get()
    }
    fn set_unscheduled(&self) {
        self.scheduled.set(false);
    }
}

fn new_timer() -> (Timer, Rc<Cell<bool>>, Rc<Cell<bool>>) {
    let c = Rc::new(Cell::new(false));
    let s = Rc::new(Cell::new(true));
    (
        Timer {
            cancelled: c.clone(),
            scheduled: s.clone(),
        },
        c,
        s,
    )
}

fn report(name: &str, ops: u64, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64 / ops as f64;
    println!("{name:<48} {ns:>8.2} ns/op ({ops} ops)");
}

fn main() {
    const N: u64 = 2_000_000;

    // Live timers that never fire keep cancelled ones off the top, so compaction does the work.
    let mut heap = TimerHeap::<Timer>::new();
    let mut keep = Vec::new();
    for _ in 0..1000 {
        let (t, c, s) = new_timer();
        heap.push(1.0, t);
        keep.push((c, s));
    }
    let mut removed = Vec::new();
    report("timer insert+cancel+purge (1000 live)", N, || {
        for i in 0..N {
            let (t, c, s) = new_timer();
            heap.push(black_box(1e6 + i as f64), t);
            c.set(true);
            if s.get() {
                heap.note_cancelled();
            }
            heap.purge_cancelled(&mut removed);
            removed.clear();
        }
    });
    black_box(heap.len());

    // Cancelled timers reach the top and are dropped by the top purge.
    let mut heap = TimerHeap::<Timer>::new();
    report("timer insert+cancel+purge (empty heap)", N, || {
        for i in 0..N {
            let (t, c, s) = new_timer();
            heap.push(black_box(i as f64), t);
            c.set(true);
            if s.get() {
                heap.note_cancelled();
            }
            heap.purge_cancelled(&mut removed);
            removed.clear();
        }
    });

    // Schedule then fire, 1000 in flight.
    let mut heap = TimerHeap::<Timer>::new();
    for i in 0..1000 {
        heap.push(i as f64, new_timer().0);
    }
    report("timer insert+pop_due (1000 in flight)", N, || {
        let mut now = 0.0;
        for i in 0..N {
            heap.push(black_box(1000.0 + i as f64), new_timer().0);
            now += 1.0;
            heap.pop_due(now, |t| {
                black_box(t);
            });
        }
    });
    black_box(heap.len());
}
