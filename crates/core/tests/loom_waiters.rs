//! Loom model (c): waiters. A reader registers for a token while writers'
//! claims finish concurrently, and possibly times out. Checked at every
//! interleaving: a waiter whose token is reached is always woken (a lost
//! wake-up would leave `block_on` parked forever, which loom reports as a
//! deadlock); a woken waiter's token covers its target; a waiter that
//! times out leaves no registration behind.
#![cfg(roomcache_loom)]

mod support;

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use loom::future::{block_on, AtomicWaker};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use roomcache_core::{PositionTracker, StreamToken};

fn tracker() -> Arc<PositionTracker> {
    Arc::new(support::tracker(&[("w1", 1), ("w2", 1)]))
}

fn token(text: &str) -> StreamToken {
    text.parse().unwrap()
}

/// A timer another thread fires.
#[derive(Default)]
struct Timer {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl Timer {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// Waits for `target` or until `timer` fires; `None` means timed out.
/// The wait future is dropped before this returns, as a timed-out request
/// drops it.
fn wait_or_time_out(
    tracker: &PositionTracker,
    target: StreamToken,
    timer: &Timer,
) -> Option<StreamToken> {
    let mut wait = pin!(tracker.wait_for(target));
    block_on(poll_fn(|cx| {
        if let Poll::Ready(token) = wait.as_mut().poll(cx) {
            return Poll::Ready(Some(token));
        }
        timer.waker.register(cx.waker().clone());
        if timer.fired.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }))
}

/// Two writers advance concurrently with a reader waiting for both.
#[test]
fn a_waiter_is_woken_whatever_the_order_of_advances() {
    loom::model(|| {
        let tracker = tracker();
        let advancers: Vec<_> = ["w1", "w2"]
            .into_iter()
            .map(|writer| {
                let tracker = tracker.clone();
                thread::spawn(move || {
                    let claim = tracker.claim(&support::name(writer), 2).unwrap();
                    support::finish(&tracker, &claim);
                })
            })
            .collect();
        let target = token("s2");
        let reached = block_on(tracker.wait_for(target.clone()));
        assert!(target.is_before_or_eq(&reached), "woken at {reached}");
        assert_eq!(tracker.waiter_count(), 0);
        for advancer in advancers {
            advancer.join().unwrap();
        }
    });
}

/// Two readers wait for different writers; one advance each.
#[test]
fn each_waiter_is_woken_by_the_advance_it_needs() {
    loom::model(|| {
        let tracker = tracker();
        let readers: Vec<_> = ["m1~w1.2", "m1~w2.2"]
            .into_iter()
            .map(|text| {
                let tracker = tracker.clone();
                thread::spawn(move || {
                    let target = token(text);
                    let reached = block_on(tracker.wait_for(target.clone()));
                    assert!(target.is_before_or_eq(&reached));
                })
            })
            .collect();
        support::advance(&tracker, "w2", 2);
        support::advance(&tracker, "w1", 2);
        for reader in readers {
            reader.join().unwrap();
        }
        assert_eq!(tracker.waiter_count(), 0);
    });
}

/// An advance, a registration and a timeout race: the reader ends either
/// with a covering token or timed out, and leaves no registration behind.
#[test]
fn advance_register_and_timeout_race() {
    loom::model(|| {
        let tracker = tracker();
        let timer = Arc::new(Timer::default());
        let advancer = {
            let tracker = tracker.clone();
            thread::spawn(move || {
                support::advance(&tracker, "w1", 3);
                support::advance(&tracker, "w2", 3);
            })
        };
        let clock = {
            let timer = timer.clone();
            thread::spawn(move || timer.fire())
        };
        let target = token("s3");
        match wait_or_time_out(&tracker, target.clone(), &timer) {
            Some(reached) => assert!(target.is_before_or_eq(&reached)),
            None => assert!(timer.fired.load(Ordering::SeqCst)),
        }
        assert_eq!(tracker.waiter_count(), 0, "a registration leaked");
        advancer.join().unwrap();
        clock.join().unwrap();
    });
}

/// A token the cache already covers answers at once, without registering.
#[test]
fn a_covered_target_returns_at_once() {
    loom::model(|| {
        let tracker = tracker();
        let reached = block_on(tracker.wait_for(token("s1")));
        assert_eq!(reached.to_string(), "s1");
        assert_eq!(tracker.waiter_count(), 0);
    });
}
