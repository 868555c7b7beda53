//! One poll turn with a zero timeout: `Poller::wait(Some(0))` + `drain`, the cost of a loop turn
//! that has ready callbacks and must not block.
//!
//! `cargo bench -p ferroloop-core --bench poll_turn`. Prints ns/op; no assertions.

use ferroloop_core::{Events, Interest, Poller};
use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn report(name: &str, ops: u64, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let ns = t.elapsed().as_nanos() as f64 / ops as f64;
    println!("{name:<48} {ns:>8.2} ns/op ({ops} ops)");
}

fn turn(poller: &Poller, events: &mut Events) -> usize {
    poller.wait(events, Some(Duration::ZERO)).expect("wait");
    let mut n = 0;
    poller.drain(events, |r| {
        black_box(r);
        n += 1;
    });
    n
}

fn main() {
    const N: u64 = 200_000;

    let poller = Poller::new().expect("poller");
    let mut events = Events::new();
    report("poll turn, zero timeout, nothing registered", N, || {
        for _ in 0..N {
            black_box(turn(&poller, &mut events));
        }
    });

    // 64 idle sockets registered for read: nothing ready.
    let pairs: Vec<(UnixStream, UnixStream)> = (0..64)
        .map(|_| UnixStream::pair().expect("socketpair"))
        .collect();
    for (i, (a, _)) in pairs.iter().enumerate() {
        poller
            .add(
                a.as_raw_fd(),
                i as u64,
                Interest {
                    read: true,
                    write: false,
                },
            )
            .expect("add");
    }
    report("poll turn, zero timeout, 64 idle fds", N, || {
        for _ in 0..N {
            black_box(turn(&poller, &mut events));
        }
    });

    // 64 readable sockets (level-triggered: reported on every turn).
    for (_, b) in &pairs {
        (&*b).write_all(b"x").expect("write");
    }
    assert_eq!(turn(&poller, &mut events), 64);
    report("poll turn, zero timeout, 64 ready fds", N, || {
        for _ in 0..N {
            black_box(turn(&poller, &mut events));
        }
    });

    // Wake + turn: the cost of a call_soon_threadsafe wake-up consumed by the next turn.
    let poller = Poller::new().expect("poller");
    let waker = poller.waker();
    report("wake + poll turn (zero timeout)", N, || {
        for _ in 0..N {
            waker.wake().expect("wake");
            black_box(turn(&poller, &mut events));
        }
    });
}
