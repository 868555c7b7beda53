//! Ready queue push/pop churn: the cost of `call_soon` plus running the callback's queue slot.
//!
//! `cargo bench -p ferroloop-core --bench ready_queue`. Prints ns/op; no assertions.

use ferroloop_core::ReadyQueue;
use std::hint::black_box;
use std::time::Instant;

fn report(name: &str, ops: u64, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64 / ops as f64;
    println!("{name:<48} {ns:>8.2} ns/op ({ops} ops)");
}

fn main() {
    const N: u64 = 10_000_000;

    // Steady state: one push and one pop per op, queue length stays small.
    let mut q = ReadyQueue::<u64>::new();
    report("ready_queue push+pop (depth 1)", N, || {
        for i in 0..N {
            q.push(black_box(i));
            black_box(q.pop());
        }
    });

    // Turns: push a batch, then drain it the way the loop does, with turn_len taken once.
    const BATCH: u64 = 256;
    let mut q = ReadyQueue::<u64>::new();
    report("ready_queue turn of 256 push, 256 pop", N, || {
        for _ in 0..N / BATCH {
            for i in 0..BATCH {
                q.push(black_box(i));
            }
            let n = q.turn_len();
            for _ in 0..n {
                black_box(q.pop());
            }
        }
    });

    // Callbacks that reschedule themselves (call_soon from a callback), 64 in flight.
    let mut q = ReadyQueue::<u64>::new();
    for i in 0..64 {
        q.push(i);
    }
    report("ready_queue self-rescheduling (64 in flight)", N, || {
        let mut done = 0;
        while done < N {
            let n = q.turn_len();
            for _ in 0..n {
                let v = q.pop().expect("queued");
                q.push(black_box(v + 1));
            }
            done += n as u64;
        }
    });
    black_box(q.len());
}
