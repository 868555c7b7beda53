//! The timer heap pops in deadline order, FIFO among equal deadlines, treats a NaN deadline as
//! due at once, pops exactly the entries with `key < end`, and reports the earliest deadline.

mod common;

use common::{pop_ids, schedule, Item, Rng};
use ferroloop_core::TimerHeap;

#[test]
fn pops_in_deadline_order() {
    let mut heap = TimerHeap::<Item>::new();
    let mut rng = Rng::new(0x5eed);
    let mut deadlines = Vec::new();
    for id in 0..2000u32 {
        let when = rng.next_f64() * 1000.0;
        deadlines.push((when, id));
        schedule(&mut heap, id, when);
    }
    assert_eq!(heap.len(), 2000);
    // Stable sort: equal deadlines (unlikely here) keep insertion order, as the heap promises.
    deadlines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let expected: Vec<u32> = deadlines.iter().map(|&(_, id)| id).collect();
    assert_eq!(pop_ids(&mut heap, f64::INFINITY), expected);
    assert!(heap.is_empty());
}

#[test]
fn interleaved_push_and_pop_stay_ordered() {
    let mut heap = TimerHeap::<Item>::new();
    let mut rng = Rng::new(42);
    let mut now = 0.0;
    let mut next_id = 0u32;
    let mut fired_when = Vec::new();
    let mut whens = std::collections::HashMap::new();
    for _ in 0..200 {
        for _ in 0..rng.below(20) {
            let when = now + rng.next_f64() * 10.0;
            whens.insert(next_id, when);
            schedule(&mut heap, next_id, when);
            next_id += 1;
        }
        now += 0.5;
        for id in pop_ids(&mut heap, now) {
            let when = whens[&id];
            assert!(
                when < now,
                "timer {id} at {when} popped before it was due ({now})"
            );
            fired_when.push(when);
        }
        if let Some(d) = heap.next_deadline() {
            assert!(d >= now, "a due timer ({d}) was left in the heap at {now}");
        }
    }
    fired_when.extend(
        pop_ids(&mut heap, f64::INFINITY)
            .into_iter()
            .map(|id| whens[&id]),
    );
    assert_eq!(
        fired_when.len(),
        next_id as usize,
        "every timer fires exactly once"
    );
    assert!(
        fired_when.windows(2).all(|w| w[0] <= w[1]),
        "timers fired out of deadline order"
    );
}

#[test]
fn equal_deadlines_are_fifo() {
    let mut heap = TimerHeap::<Item>::new();
    // Interleave two deadlines and push enough entries to exercise sift-up and sift-down.
    for id in 0..300u32 {
        let when = if id % 3 == 0 { 2.0 } else { 1.0 };
        schedule(&mut heap, id, when);
    }
    let popped = pop_ids(&mut heap, f64::INFINITY);
    let ones: Vec<u32> = (0..300).filter(|id| id % 3 != 0).collect();
    let twos: Vec<u32> = (0..300).filter(|id| id % 3 == 0).collect();
    assert_eq!(popped, [ones, twos].concat());
}

#[test]
fn equal_deadlines_stay_fifo_across_partial_pops() {
    let mut heap = TimerHeap::<Item>::new();
    for id in 0..10u32 {
        schedule(&mut heap, id, 5.0);
    }
    assert_eq!(
        pop_ids(&mut heap, 5.0),
        Vec::<u32>::new(),
        "5.0 < 5.0 is false"
    );
    // Later arrivals at the same deadline go after the earlier ones.
    for id in 10..20u32 {
        schedule(&mut heap, id, 5.0);
    }
    assert_eq!(pop_ids(&mut heap, 5.5), (0..20).collect::<Vec<_>>());
}

#[test]
fn signed_zero_deadlines_are_equal_and_fifo() {
    // -0.0 == 0.0, so these are equal deadlines and must come out in scheduling order.
    let mut heap = TimerHeap::<Item>::new();
    schedule(&mut heap, 0, 0.0);
    schedule(&mut heap, 1, -0.0);
    schedule(&mut heap, 2, 0.0);
    assert_eq!(pop_ids(&mut heap, 1.0), vec![0, 1, 2]);
}

#[test]
fn nan_deadline_is_due_at_once() {
    let mut heap = TimerHeap::<Item>::new();
    schedule(&mut heap, 0, 5.0);
    schedule(&mut heap, 1, 1.0);
    schedule(&mut heap, 2, f64::NAN);
    schedule(&mut heap, 3, -1e300);
    // NaN sorts before every finite deadline, so it is the next deadline...
    assert_eq!(heap.next_deadline(), Some(f64::NEG_INFINITY));
    // ...and is due for any finite `end`, even one before every other timer.
    assert_eq!(pop_ids(&mut heap, -1e301), vec![2]);
    assert_eq!(heap.next_deadline(), Some(-1e300));
    assert_eq!(pop_ids(&mut heap, 2.0), vec![3, 1]);
    assert_eq!(heap.len(), 1);
}

#[test]
fn nan_and_negative_infinity_share_a_slot_fifo() {
    let mut heap = TimerHeap::<Item>::new();
    schedule(&mut heap, 0, f64::NEG_INFINITY);
    schedule(&mut heap, 1, f64::NAN);
    schedule(&mut heap, 2, f64::NEG_INFINITY);
    schedule(&mut heap, 3, f64::NAN);
    assert_eq!(pop_ids(&mut heap, 0.0), vec![0, 1, 2, 3]);
}

#[test]
fn pop_due_pops_exactly_keys_below_end() {
    let mut heap = TimerHeap::<Item>::new();
    let whens = [1.0, 2.0, 2.0, 3.0, f64::INFINITY];
    for (id, &w) in whens.iter().enumerate() {
        schedule(&mut heap, id as u32, w);
    }
    assert_eq!(
        pop_ids(&mut heap, 1.0),
        Vec::<u32>::new(),
        "key == end is not due"
    );
    assert_eq!(pop_ids(&mut heap, 2.0), vec![0]);
    assert_eq!(heap.len(), 4);
    assert_eq!(
        pop_ids(&mut heap, f64::from_bits(2.0f64.to_bits() + 1)),
        vec![1, 2]
    );
    assert_eq!(
        pop_ids(&mut heap, f64::NAN),
        Vec::<u32>::new(),
        "nothing is < NaN"
    );
    assert_eq!(
        pop_ids(&mut heap, f64::INFINITY),
        vec![3],
        "an infinite deadline never fires"
    );
    assert_eq!(heap.len(), 1);
    assert_eq!(heap.next_deadline(), Some(f64::INFINITY));
}

#[test]
fn pop_due_marks_fired_entries_unscheduled() {
    let mut heap = TimerHeap::<Item>::new();
    let a = schedule(&mut heap, 0, 1.0);
    let b = schedule(&mut heap, 1, 2.0);
    assert_eq!(pop_ids(&mut heap, 1.5), vec![0]);
    assert!(!a.scheduled.get());
    assert_eq!(a.unscheduled_calls.get(), 1);
    assert!(b.scheduled.get());
    assert_eq!(b.unscheduled_calls.get(), 0);
}

#[test]
fn next_deadline_tracks_the_earliest_entry() {
    let mut heap = TimerHeap::<Item>::new();
    assert_eq!(heap.next_deadline(), None);
    schedule(&mut heap, 0, 10.0);
    assert_eq!(heap.next_deadline(), Some(10.0));
    schedule(&mut heap, 1, 3.0);
    assert_eq!(heap.next_deadline(), Some(3.0));
    schedule(&mut heap, 2, 7.0);
    assert_eq!(heap.next_deadline(), Some(3.0));
    pop_ids(&mut heap, 5.0);
    assert_eq!(heap.next_deadline(), Some(7.0));
    pop_ids(&mut heap, f64::INFINITY);
    assert_eq!(heap.next_deadline(), None);
    assert!(heap.is_empty());
}

#[test]
fn take_all_empties_the_heap() {
    let mut heap = TimerHeap::<Item>::new();
    for id in 0..5u32 {
        schedule(&mut heap, id, id as f64);
    }
    let mut ids: Vec<u32> = heap.iter().map(|it| it.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    let mut taken: Vec<u32> = heap.take_all().into_iter().map(|it| it.id).collect();
    taken.sort_unstable();
    assert_eq!(taken, vec![0, 1, 2, 3, 4]);
    assert!(heap.is_empty());
    assert_eq!(heap.next_deadline(), None);
}
