//! The mail relay's breaker: after `mail.smtp_breaker_timeouts` conversations in a
//! row get no answer (they time out, or the connection is refused or dropped),
//! the relay is thought down for `mail.smtp_breaker_cooldown_secs`.
//! Meanwhile deliveries are deferred (back to the queue, attempts not counted)
//! instead of each spending its whole timeout on a relay that does not answer.
//! After the cool-down one delivery tries (the others keep waiting); its answer
//! closes the breaker or opens it for another cool-down. A readiness probe that
//! reaches the relay closes it at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

pub struct Breaker {
    timeouts_to_open: u32,
    cooldown: Duration,
    state: Mutex<State>,
    /// `ferry_mail_relay_breaker_open`.
    gauge: Gauge,
}

#[derive(Default)]
struct State {
    /// Conversations in a row that timed out.
    timeouts: u32,
    /// While set, deliveries wait until then; after it, one tries.
    open_until: Option<Instant>,
    /// Since when a delivery is trying after the cool-down (a trial whose task
    /// was dropped mid-conversation is given up after another cool-down).
    trying: Option<Instant>,
}

impl Breaker {
    pub fn new(timeouts_to_open: u32, cooldown: Duration) -> Breaker {
        Breaker {
            timeouts_to_open: timeouts_to_open.max(1),
            cooldown,
            state: Mutex::new(State::default()),
            gauge: Gauge::default(),
        }
    }

    /// Reports the breaker's state on `gauge` from now on.
    pub fn report_on(&mut self, gauge: Gauge) {
        gauge.set(self.gauge.get());
        self.gauge = gauge;
    }

    /// `None` when a conversation may start now; otherwise how long to wait.
    /// After a cool-down, the first caller is let through and the rest wait.
    pub fn admit(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = state.open_until?;
        let now = Instant::now();
        if now < until {
            return Some(until - now);
        }
        if state.trying.is_some_and(|since| now < since + self.cooldown) {
            return Some(Duration::from_secs(1));
        }
        state.trying = Some(now);
        None
    }

    /// The relay answered (a message went, or a probe reached it).
    pub fn answered(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.open_until.is_some() {
            tracing::info!("the mail relay answers again; deliveries resume");
            self.gauge.set(0);
        }
        *state = State::default();
    }

    /// A conversation got no answer (timed out, could not connect, was cut).
    /// Returns the cool-down
    /// when the breaker is open now: the delivery waits it out with the others
    /// rather than spend an attempt on a relay known to be down.
    pub fn timed_out(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.timeouts = state.timeouts.saturating_add(1);
        state.trying = None;
        if state.timeouts < self.timeouts_to_open {
            return None;
        }
        if state.open_until.is_none() {
            tracing::warn!(
                timeouts = state.timeouts,
                cooldown_secs = self.cooldown.as_secs(),
                "the mail relay keeps timing out; deliveries wait for it"
            );
            self.gauge.set(1);
        }
        state.open_until = Some(Instant::now() + self.cooldown);
        Some(self.cooldown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_in_a_row_hold_deliveries_back_until_the_relay_answers() {
        let breaker = Breaker::new(2, Duration::from_millis(50));
        assert_eq!(breaker.admit(), None);
        assert_eq!(breaker.timed_out(), None);
        assert_eq!(breaker.admit(), None, "one timeout is not an outage");
        assert_eq!(breaker.timed_out(), Some(Duration::from_millis(50)));
        assert!(breaker.admit().is_some(), "two in a row open it");
        assert_eq!(breaker.gauge.get(), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(breaker.admit(), None, "after the cool-down one tries");
        assert!(breaker.admit().is_some(), "while the others wait");
        breaker.answered();
        assert_eq!(breaker.admit(), None);
        assert_eq!(breaker.gauge.get(), 0);
    }
}
