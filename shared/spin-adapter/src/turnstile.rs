//! A first-come, first-served async lock for one Wasm instance (single-threaded).
//!
//! `futures::lock::Mutex` lets a newly arriving request take a just-released lock before the
//! waiter it woke gets to run, so under steady load one request could wait behind many later
//! ones: the benchmarks saw p50 2 ms and p99 160 ms for debits with 16 requests in one instance
//! (docs/performance.md). Tickets make the order strict; a waiter that is dropped (its request
//! cancelled) gives its turn to the next one.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The lock: tickets are served in the order they were taken.
#[derive(Default)]
pub struct Turnstile {
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    wakers: RefCell<BTreeMap<u64, Waker>>,
    /// Tickets whose waiter was dropped before its turn.
    abandoned: RefCell<BTreeSet<u64>>,
}

impl Turnstile {
    /// Waits for this caller's turn; the turn lasts until the returned guard is dropped.
    pub fn enter(self: &Rc<Self>) -> Wait {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        Wait {
            turnstile: Rc::clone(self),
            ticket,
            entered: false,
        }
    }

    /// Ends the current turn and wakes the next live waiter.
    fn advance(&self) {
        let mut serving = self.serving.get() + 1;
        while self.abandoned.borrow_mut().remove(&serving) {
            serving += 1;
        }
        self.serving.set(serving);
        let next = self.wakers.borrow_mut().remove(&serving);
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

/// A caller waiting for its turn.
pub struct Wait {
    turnstile: Rc<Turnstile>,
    ticket: u64,
    entered: bool,
}

impl Future for Wait {
    type Output = Turn;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn> {
        if self.turnstile.serving.get() == self.ticket {
            self.entered = true;
            self.turnstile.wakers.borrow_mut().remove(&self.ticket);
            return Poll::Ready(Turn {
                turnstile: Rc::clone(&self.turnstile),
            });
        }
        self.turnstile
            .wakers
            .borrow_mut()
            .insert(self.ticket, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if self.entered {
            return;
        }
        self.turnstile.wakers.borrow_mut().remove(&self.ticket);
        if self.turnstile.serving.get() == self.ticket {
            // Our turn came but we are gone: pass it on.
            self.turnstile.advance();
        } else {
            self.turnstile.abandoned.borrow_mut().insert(self.ticket);
        }
    }
}

/// The holder's turn; dropping it lets the next waiter in.
pub struct Turn {
    turnstile: Rc<Turnstile>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turnstile.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;

    #[test]
    fn turns_are_served_in_arrival_order_and_cancelled_waiters_pass_theirs_on() {
        let turnstile = Rc::new(Turnstile::default());
        let first = turnstile.enter().now_or_never();
        assert!(first.is_some(), "an idle turnstile lets in at once");
        let mut second = Box::pin(turnstile.enter());
        let third = Box::pin(turnstile.enter());
        let mut fourth = Box::pin(turnstile.enter());
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(fourth.as_mut().poll(&mut cx).is_pending());
        drop(third); // cancelled while waiting
        drop(first);
        let second_turn = match second.as_mut().poll(&mut cx) {
            Poll::Ready(turn) => turn,
            Poll::Pending => panic!("second is next"),
        };
        assert!(fourth.as_mut().poll(&mut cx).is_pending());
        drop(second_turn);
        assert!(
            fourth.as_mut().poll(&mut cx).is_ready(),
            "the cancelled third is skipped"
        );
    }
}
