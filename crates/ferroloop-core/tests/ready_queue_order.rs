//! The ready queue is FIFO, a turn runs only what was queued when it started, and `take_all`
//! hands back everything in order.

use ferroloop_core::ReadyQueue;

#[test]
fn fifo_order() {
    let mut q = ReadyQueue::new();
    assert!(q.is_empty());
    assert_eq!(q.pop(), None);
    for i in 0..1000 {
        q.push(i);
    }
    assert_eq!(q.len(), 1000);
    assert!(!q.is_empty());
    assert!(q.iter().copied().eq(0..1000), "iter is oldest first");
    let popped: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
    assert_eq!(popped, (0..1000).collect::<Vec<_>>());
    assert!(q.is_empty());
    assert_eq!(q.pop(), None);
}

#[test]
fn fifo_with_interleaved_push_and_pop() {
    // Crosses the VecDeque's wrap-around point many times.
    let mut q = ReadyQueue::new();
    let mut next_in = 0u32;
    let mut next_out = 0u32;
    for round in 0..500u32 {
        for _ in 0..(round % 7 + 1) {
            q.push(next_in);
            next_in += 1;
        }
        for _ in 0..(round % 5 + 1) {
            if let Some(v) = q.pop() {
                assert_eq!(v, next_out);
                next_out += 1;
            }
        }
        assert_eq!(q.len() as u32, next_in - next_out);
    }
    while let Some(v) = q.pop() {
        assert_eq!(v, next_out);
        next_out += 1;
    }
    assert_eq!(next_out, next_in);
}

/// A callback as far as the queue is concerned: its name, and whether running it schedules a
/// follow-up with `call_soon`.
#[derive(Debug, Clone, PartialEq)]
struct Cb {
    name: String,
    reschedules: bool,
}

fn cb(name: &str, reschedules: bool) -> Cb {
    Cb {
        name: name.to_owned(),
        reschedules,
    }
}

/// Runs one loop turn as `_run_once` does: exactly `turn_len()` callbacks. Returns what ran.
fn run_turn(q: &mut ReadyQueue<Cb>) -> Vec<String> {
    let n = q.turn_len();
    let mut ran = Vec::new();
    for _ in 0..n {
        let c = q.pop().expect("turn_len counted it");
        if c.reschedules {
            q.push(cb(&format!("{}'", c.name), false));
        }
        ran.push(c.name);
    }
    ran
}

#[test]
fn turn_len_is_what_was_queued_when_the_turn_started() {
    let mut q = ReadyQueue::new();
    assert_eq!(q.turn_len(), 0);
    q.push(cb("a", true));
    q.push(cb("b", false));
    q.push(cb("c", true));
    assert_eq!(q.turn_len(), 3);
    assert_eq!(q.turn_len(), q.len());

    // Callbacks scheduled during a turn run on the next turn, after the turn's own.
    assert_eq!(run_turn(&mut q), ["a", "b", "c"]);
    assert_eq!(q.turn_len(), 2);
    assert_eq!(run_turn(&mut q), ["a'", "c'"]);
    assert_eq!(q.turn_len(), 0);
    assert_eq!(run_turn(&mut q), Vec::<String>::new());
}

#[test]
fn self_rescheduling_callback_cannot_starve_a_turn() {
    // A callback that always reschedules itself runs once per turn, so every turn ends.
    let mut q = ReadyQueue::new();
    q.push(0u64);
    for turn in 0..100u64 {
        let n = q.turn_len();
        assert_eq!(n, 1, "turn {turn}");
        for _ in 0..n {
            let v = q.pop().expect("queued");
            assert_eq!(v, turn);
            q.push(v + 1);
        }
    }
    assert_eq!(q.len(), 1);
}

#[test]
fn take_all_returns_everything_in_order_and_empties() {
    let mut q = ReadyQueue::new();
    for i in 0..10 {
        q.push(i);
    }
    q.pop();
    let all = q.take_all();
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        (1..10).collect::<Vec<_>>()
    );
    assert!(q.is_empty());
    assert_eq!(q.turn_len(), 0);
    assert_eq!(q.pop(), None);
    // Still usable afterwards.
    q.push(42);
    assert_eq!(q.pop(), Some(42));
    assert!(q.take_all().is_empty());
}

#[test]
fn take_all_hands_items_back_undropped() {
    use std::rc::Rc;
    let token = Rc::new(());
    let mut q = ReadyQueue::new();
    for _ in 0..5 {
        q.push(Rc::clone(&token));
    }
    let all = q.take_all();
    assert_eq!(
        Rc::strong_count(&token),
        6,
        "take_all must not drop the callbacks itself"
    );
    drop(all);
    assert_eq!(Rc::strong_count(&token), 1);
}
