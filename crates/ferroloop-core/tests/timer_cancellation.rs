//! Lazy cancellation in the timer heap: cancelled entries that come due are handed over marked
//! unscheduled (the caller skips them), the cancelled count stays exact, cancelled entries at the top are purged, and a
//! compaction pass rebuilds the heap once more than half of over 100 entries are cancelled.

mod common;

use common::{cancel, pop_ids, pop_raw, purge, schedule, Handle, Item, Rng};
use ferroloop_core::timers::{CANCELLED_FRACTION_FOR_COMPACTION, MIN_SCHEDULED_FOR_COMPACTION};
use ferroloop_core::TimerHeap;

/// Counts the entries the heap holds that are cancelled, to check `cancelled()` against.
fn actually_cancelled(heap: &TimerHeap<Item>) -> usize {
    heap.iter().filter(|it| it.cancelled.get()).count()
}

#[test]
fn thresholds_are_cpythons() {
    assert_eq!(MIN_SCHEDULED_FOR_COMPACTION, 100);
    assert_eq!(CANCELLED_FRACTION_FOR_COMPACTION, 0.5);
}

#[test]
fn cancelled_entries_are_skipped_and_unscheduled() {
    let mut heap = TimerHeap::<Item>::new();
    let a = schedule(&mut heap, 0, 1.0);
    let b = schedule(&mut heap, 1, 2.0);
    let c = schedule(&mut heap, 2, 3.0);
    cancel(&mut heap, &b);
    // Cancelling is O(1): the entry stays until it is reached.
    assert_eq!(heap.len(), 3);
    assert_eq!(heap.cancelled(), 1);
    assert!(b.scheduled.get());

    // pop_due hands the cancelled entry over in its place (the caller skips it)...
    let raw = pop_raw(&mut heap, f64::INFINITY);
    let seen: Vec<(u32, bool)> = raw.iter().map(|it| (it.id, it.cancelled.get())).collect();
    assert_eq!(seen, vec![(0, false), (1, true), (2, false)]);
    assert!(heap.is_empty());
    assert_eq!(heap.cancelled(), 0, "popping a cancelled entry uncounts it");
    for h in [&a, &b, &c] {
        assert!(!h.scheduled.get(), "timer {} still marked scheduled", h.id);
        assert_eq!(h.unscheduled_calls.get(), 1, "timer {}", h.id);
    }
}

#[test]
fn the_loop_skips_cancelled_entries() {
    let mut heap = TimerHeap::<Item>::new();
    let hs: Vec<Handle> = (0..10)
        .map(|id| schedule(&mut heap, id, id as f64))
        .collect();
    for h in hs.iter().filter(|h| h.id % 3 == 0) {
        cancel(&mut heap, h);
    }
    assert_eq!(heap.cancelled(), 4);
    assert_eq!(pop_ids(&mut heap, 5.5), vec![1, 2, 4, 5]);
    assert_eq!(heap.cancelled(), 2, "ids 6 and 9 are still held");
    assert_eq!(pop_ids(&mut heap, f64::INFINITY), vec![7, 8]);
    assert_eq!(heap.cancelled(), 0);
    assert!(hs.iter().all(|h| h.unscheduled_calls.get() == 1));
}

#[test]
fn pop_due_leaves_cancelled_entries_past_end_alone() {
    let mut heap = TimerHeap::<Item>::new();
    let a = schedule(&mut heap, 0, 1.0);
    let b = schedule(&mut heap, 1, 5.0);
    cancel(&mut heap, &a);
    cancel(&mut heap, &b);
    assert_eq!(heap.cancelled(), 2);
    assert_eq!(pop_ids(&mut heap, 2.0), Vec::<u32>::new());
    assert_eq!(heap.len(), 1);
    assert_eq!(heap.cancelled(), 1);
    assert_eq!(heap.next_deadline(), Some(5.0));
    assert!(!a.scheduled.get());
    assert!(
        b.scheduled.get(),
        "an entry not yet due must stay in the heap"
    );
    assert_eq!(b.unscheduled_calls.get(), 0);
}

#[test]
fn cancel_after_firing_is_not_counted() {
    let mut heap = TimerHeap::<Item>::new();
    let a = schedule(&mut heap, 0, 1.0);
    let _b = schedule(&mut heap, 1, 2.0);
    assert_eq!(pop_ids(&mut heap, 1.5), vec![0]);
    // The owner sees the fired timer is unscheduled and does not call note_cancelled.
    cancel(&mut heap, &a);
    assert_eq!(heap.cancelled(), 0);
    // Cancelling twice counts once.
    let c = schedule(&mut heap, 2, 3.0);
    cancel(&mut heap, &c);
    cancel(&mut heap, &c);
    assert_eq!(heap.cancelled(), 1);
    assert_eq!(heap.cancelled(), actually_cancelled(&heap));
}

#[test]
fn note_cancelled_counts_each_call() {
    let mut heap = TimerHeap::<Item>::new();
    assert_eq!(heap.cancelled(), 0);
    let hs: Vec<Handle> = (0..5)
        .map(|id| schedule(&mut heap, id, 10.0 + id as f64))
        .collect();
    for (n, h) in hs.iter().enumerate() {
        cancel(&mut heap, h);
        assert_eq!(heap.cancelled(), n + 1);
    }
    assert_eq!(heap.len(), 5);
}

#[test]
fn purge_drops_cancelled_entries_at_the_top_only() {
    let mut heap = TimerHeap::<Item>::new();
    let a = schedule(&mut heap, 0, 1.0);
    let b = schedule(&mut heap, 1, 2.0);
    let c = schedule(&mut heap, 2, 3.0);
    let d = schedule(&mut heap, 3, 4.0);
    cancel(&mut heap, &a);
    cancel(&mut heap, &b);
    cancel(&mut heap, &d);
    assert_eq!(
        heap.next_deadline(),
        Some(1.0),
        "before a purge the top may be cancelled"
    );

    assert_eq!(purge(&mut heap), vec![0, 1]);
    // a and b were at the top; d sits behind the live c and stays (4 entries: no compaction).
    assert_eq!(heap.len(), 2);
    assert_eq!(heap.cancelled(), 1);
    assert_eq!(heap.next_deadline(), Some(3.0));
    assert!(!a.scheduled.get() && !b.scheduled.get());
    assert_eq!(a.unscheduled_calls.get(), 1);
    assert_eq!(b.unscheduled_calls.get(), 1);
    assert!(c.scheduled.get() && d.scheduled.get());

    // Purging again changes nothing while the top is live.
    assert_eq!(purge(&mut heap), Vec::<u32>::new());
    assert_eq!(heap.len(), 2);
    assert_eq!(heap.cancelled(), 1);

    assert_eq!(pop_ids(&mut heap, f64::INFINITY), vec![2]);
    assert_eq!(heap.cancelled(), 0);
    assert_eq!(d.unscheduled_calls.get(), 1);
    assert_eq!(c.unscheduled_calls.get(), 1);
}

#[test]
fn purge_of_an_all_cancelled_heap_empties_it() {
    let mut heap = TimerHeap::<Item>::new();
    let hs: Vec<Handle> = (0..50)
        .map(|id| schedule(&mut heap, id, id as f64))
        .collect();
    for h in &hs {
        cancel(&mut heap, h);
    }
    assert_eq!(
        purge(&mut heap),
        (0..50).collect::<Vec<_>>(),
        "removed in deadline order"
    );
    assert!(heap.is_empty());
    assert_eq!(heap.cancelled(), 0);
    assert_eq!(heap.next_deadline(), None);
    assert!(hs.iter().all(|h| h.unscheduled_calls.get() == 1));
}

/// Schedules `n` timers with deadlines `0..n`, then cancels those `pick` selects.
fn heap_with_cancelled(n: u32, pick: impl Fn(u32) -> bool) -> (TimerHeap<Item>, Vec<Handle>) {
    let mut heap = TimerHeap::<Item>::new();
    let hs: Vec<Handle> = (0..n)
        .map(|id| schedule(&mut heap, id, id as f64))
        .collect();
    for h in hs.iter().filter(|h| pick(h.id)) {
        cancel(&mut heap, h);
    }
    (heap, hs)
}

#[test]
fn compaction_when_over_100_and_over_half_cancelled() {
    // 200 entries, 101 cancelled (the odd ids and id 2), but entry 0 is live so that the top
    // purge alone would drop nothing: only compaction can shrink the heap.
    let (mut heap, hs) = heap_with_cancelled(200, |id| id % 2 == 1 || id == 2);
    assert_eq!(heap.cancelled(), 101);
    assert_eq!(heap.next_deadline(), Some(0.0));

    let mut removed = purge(&mut heap);
    removed.sort_unstable();
    let expected_removed: Vec<u32> = (0..200).filter(|id| id % 2 == 1 || *id == 2).collect();
    assert_eq!(
        removed, expected_removed,
        "compaction hands back every cancelled entry"
    );
    assert_eq!(heap.len(), 99, "every cancelled entry is dropped at once");
    assert_eq!(heap.cancelled(), 0, "the cancelled count resets");
    assert_eq!(actually_cancelled(&heap), 0);
    for h in &hs {
        if h.cancelled.get() {
            assert!(!h.scheduled.get());
            assert_eq!(h.unscheduled_calls.get(), 1, "timer {}", h.id);
        } else {
            assert!(h.scheduled.get());
            assert_eq!(h.unscheduled_calls.get(), 0, "timer {}", h.id);
        }
    }
    // The survivors keep their deadline order.
    let expected: Vec<u32> = (0..200).filter(|id| id % 2 == 0 && *id != 2).collect();
    assert_eq!(pop_ids(&mut heap, f64::INFINITY), expected);
}

#[test]
fn compaction_keeps_fifo_among_equal_deadlines() {
    let mut heap = TimerHeap::<Item>::new();
    let hs: Vec<Handle> = (0..300)
        .map(|id| schedule(&mut heap, id, (id % 3) as f64))
        .collect();
    // Cancel 2 of every 3 except at deadline 0, keeping the top live: 200 of 300 are cancelled.
    for h in hs.iter().filter(|h| h.id % 3 != 0) {
        cancel(&mut heap, h);
    }
    assert_eq!(purge(&mut heap).len(), 200);
    assert_eq!(heap.len(), 100);
    assert_eq!(
        pop_ids(&mut heap, f64::INFINITY),
        (0..300).filter(|id| id % 3 == 0).collect::<Vec<_>>()
    );
}

#[test]
fn no_compaction_at_exactly_half_cancelled() {
    // 200 entries, exactly 100 cancelled (not more than half), top live: only the top is purged.
    let (mut heap, _hs) = heap_with_cancelled(200, |id| id % 2 == 1);
    assert_eq!(purge(&mut heap), Vec::<u32>::new());
    assert_eq!(heap.len(), 200);
    assert_eq!(heap.cancelled(), 100);
}

#[test]
fn no_compaction_at_100_entries_or_fewer() {
    // 100 entries, 99 cancelled, top live: too small to compact.
    let (mut heap, _hs) = heap_with_cancelled(100, |id| id != 0);
    assert_eq!(purge(&mut heap), Vec::<u32>::new());
    assert_eq!(heap.len(), 100);
    assert_eq!(heap.cancelled(), 99);

    // 101 entries, 51 cancelled, top live: compacted.
    let (mut heap, _hs) = heap_with_cancelled(101, |id| id % 2 == 1 || id == 100);
    assert_eq!(heap.cancelled(), 51);
    assert_eq!(purge(&mut heap).len(), 51);
    assert_eq!(heap.len(), 50);
    assert_eq!(heap.cancelled(), 0);
}

#[test]
fn take_all_resets_the_cancelled_count() {
    let (mut heap, _hs) = heap_with_cancelled(10, |id| id % 2 == 0);
    assert_eq!(heap.cancelled(), 5);
    assert_eq!(heap.take_all().len(), 10);
    assert_eq!(heap.cancelled(), 0);
    assert!(heap.is_empty());
}

#[test]
fn churn_with_early_live_timers_stays_bounded() {
    // A few live timers that never come due keep every cancelled entry off the top, so only
    // compaction can reclaim them: 1e5 schedule+cancel cycles must not grow the heap.
    let mut heap = TimerHeap::<Item>::new();
    let live: Vec<Handle> = (0..10).map(|id| schedule(&mut heap, id, 0.5)).collect();
    let mut max_len = 0;
    for i in 0..100_000u32 {
        let h = schedule(&mut heap, 1000 + i, 1000.0 + i as f64);
        cancel(&mut heap, &h);
        purge(&mut heap);
        max_len = max_len.max(heap.len());
        assert!(h.cancelled.get());
    }
    assert!(
        max_len <= MIN_SCHEDULED_FOR_COMPACTION + 1,
        "heap grew to {max_len}"
    );
    assert!(heap.len() <= MIN_SCHEDULED_FOR_COMPACTION + 1);
    assert_eq!(heap.cancelled(), actually_cancelled(&heap));
    assert!(live.iter().all(|h| h.scheduled.get()));
    assert_eq!(pop_ids(&mut heap, 1.0), (0..10).collect::<Vec<_>>());
}

#[test]
fn random_churn_keeps_heap_bounded_and_count_exact() {
    // A sliding window of `LIVE` live timers at random deadlines; each step schedules one and
    // cancels a random live one, and the clock advances so some timers fire.
    const LIVE: usize = 500;
    let mut heap = TimerHeap::<Item>::new();
    let mut rng = Rng::new(7);
    let mut live: Vec<Handle> = Vec::new();
    let mut now = 0.0;
    let mut max_len = 0;
    let mut fired = 0usize;
    for i in 0..100_000u32 {
        live.push(schedule(&mut heap, i, now + rng.next_f64() * 100.0));
        if live.len() > LIVE {
            let h = live.swap_remove(rng.below(live.len()));
            cancel(&mut heap, &h);
        }
        // One loop turn.
        purge(&mut heap);
        if i % 64 == 0 {
            now += 0.01;
            fired += pop_ids(&mut heap, now).len();
            live.retain(|h| h.scheduled.get());
        }
        max_len = max_len.max(heap.len());
        if i % 4096 == 0 {
            assert_eq!(heap.cancelled(), actually_cancelled(&heap), "at step {i}");
        }
    }
    assert!(fired > 0, "the clock should have made some timers due");
    // Compaction triggers once cancelled > len/2, i.e. len reaches about 2 * live + 1.
    assert!(max_len <= 2 * LIVE + 2, "heap grew to {max_len}");
    assert_eq!(heap.cancelled(), actually_cancelled(&heap));
    assert_eq!(heap.len() - heap.cancelled(), live.len());
}

#[test]
fn purge_hands_removed_entries_back_undropped() {
    // The caller drops removed entries itself (after releasing any lock): none is dropped inside.
    let (mut heap, hs) = heap_with_cancelled(150, |id| id >= 10);
    let mut removed = Vec::new();
    heap.purge_cancelled(&mut removed);
    assert_eq!(removed.len(), 140);
    // Each removed entry shares its flags with the test's handle: 2 owners (handle + removed).
    assert!(hs
        .iter()
        .filter(|h| h.id >= 10)
        .all(|h| std::rc::Rc::strong_count(&h.cancelled) == 2));
    // `removed` is appended to, not overwritten.
    let mut removed = vec![hs[0].clone()];
    let (mut heap, _hs) = heap_with_cancelled(5, |_| true);
    heap.purge_cancelled(&mut removed);
    assert_eq!(removed.len(), 6);
    assert_eq!(removed[0].id, 0);
    drop(heap);
}
