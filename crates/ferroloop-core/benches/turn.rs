//! Whole turns of the core's `run_once` with a minimal host (callbacks are counters): what the
//! turn itself costs per callback and per turn, without Python.
//!
//! `cargo bench -p ferroloop-core --bench turn`. Prints ns/op; no assertions.

use ferroloop_core::{
    run_once, Callback, EventLoop, Events, Host, ManualClock, MonotonicClock, Poller,
};
use std::cell::{Cell, RefCell, RefMut};
use std::hint::black_box;
use std::io;
use std::time::{Duration, Instant};

fn report(name: &str, ops: u64, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64 / ops as f64;
    println!("{name:<48} {ns:>8.2} ns/op ({ops} ops)");
}

/// A callback: an id; cancelled when odd ids are asked to be.
struct Cb {
    id: u64,
    cancelled: bool,
}

impl Callback for Cb {
    fn is_cancelled(&self) -> bool {
        self.cancelled
    }
}

struct Bench<K> {
    ev: RefCell<EventLoop<Cb, K>>,
    events: RefCell<Events>,
    ran: Cell<u64>,
    stopping: bool,
}

impl<K: ferroloop_core::Clock> Host for Bench<K> {
    type Callback = Cb;
    type Clock = K;
    type Error = ();
    type Events<'a>
        = RefMut<'a, Events>
    where
        K: 'a;

    #[inline]
    fn with_loop<R>(&self, f: impl FnOnce(&mut EventLoop<Cb, K>) -> R) -> R {
        f(&mut self.ev.borrow_mut())
    }
    fn stopping(&self) -> bool {
        self.stopping
    }
    fn events(&self) -> RefMut<'_, Events> {
        self.events.borrow_mut()
    }
    fn wait(&self, p: &Poller, e: &mut Events, t: Option<Duration>) -> io::Result<()> {
        p.wait(e, t)
    }
    fn clone_callback(&self, cb: &Cb) -> Cb {
        Cb {
            id: cb.id,
            cancelled: cb.cancelled,
        }
    }
    #[inline]
    fn run(&self, cb: &Cb) -> Result<(), ()> {
        self.ran.set(self.ran.get() + black_box(cb.id) % 2 + 1);
        Ok(())
    }
    #[inline]
    fn done(&self, cb: &Cb) {
        black_box(cb);
    }
    fn release(&self, cb: &Cb) {
        black_box(cb);
    }
    fn check_signals(&self) -> Result<(), ()> {
        Ok(())
    }
    fn signalled(&self) -> Result<(), ()> {
        Ok(())
    }
    fn io_error(&self, _: io::Error) {}
}

fn bench<K: ferroloop_core::Clock>(clock: K, stopping: bool) -> Bench<K> {
    Bench {
        ev: RefCell::new(EventLoop::new(Poller::new().expect("poller"), clock, 1e-9)),
        events: RefCell::new(Events::new()),
        ran: Cell::new(0),
        stopping,
    }
}

fn main() {
    const N: u64 = 2_000_000;
    const BATCH: u64 = 256;

    // call_soon + run, in turns of BATCH callbacks (no fd: no syscall).
    let b = bench(MonotonicClock, false);
    report("turn: call_soon + run, per callback (256/turn)", N, || {
        for _ in 0..N / BATCH {
            for id in 0..BATCH {
                b.ev.borrow_mut().call_soon(Cb {
                    id,
                    cancelled: false,
                });
            }
            run_once(&b).unwrap();
        }
    });

    // An empty turn that must not block: purge, timeout, due timers, nothing to run.
    let b = bench(MonotonicClock, true);
    report("turn: empty, stopping (no syscall)", N, || {
        for _ in 0..N {
            run_once(&b).unwrap();
        }
    });

    // Timers: schedule BATCH due ones and run them in one turn (manual clock: all due).
    let b = bench(ManualClock::new(0.0), false);
    report("turn: call_at (due) + run, per timer (256/turn)", N, || {
        for _ in 0..N / BATCH {
            for id in 0..BATCH {
                b.ev.borrow_mut().call_at(
                    -(id as f64),
                    Cb {
                        id,
                        cancelled: false,
                    },
                );
            }
            run_once(&b).unwrap();
        }
    });
    black_box(b.ran.get());
}
