//! The circuit breaker in front of Redis.
//!
//! After `threshold` consecutive failures the circuit opens: Redis is not tried and
//! requests are served uncached at their uncached latency. When the back-off has passed,
//! one request is let through as a probe; its success closes the circuit, its failure
//! reopens it with the back-off doubled (up to 30 s). State changes are logged once and
//! counted. Lock-free: the closed path is a single atomic load.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

use crate::stats::CircuitSnapshot;

const MAX_OPEN: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Circuit {
    threshold: u32,
    base_open: Duration,
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit is open; 0 when closed.
    open_until: AtomicU64,
    current_open_ms: AtomicU64,
    probing: AtomicBool,
}

/// Whether a request may try Redis now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    Closed,
    Probe,
    Denied,
}

/// Held by a request from its permit until its outcome is recorded. If the request is
/// dropped in between (a client that disconnected, a caller's own timeout) while it held
/// the half-open probe, the probe is handed back: otherwise no other request could ever
/// probe and the circuit would stay open for good.
#[must_use]
pub(crate) struct ProbeGuard<'a> {
    circuit: &'a Circuit,
    armed: bool,
}

impl<'a> ProbeGuard<'a> {
    pub(crate) fn new(circuit: &'a Circuit, permit: Permit) -> Self {
        ProbeGuard {
            circuit,
            armed: permit == Permit::Probe,
        }
    }

    /// The outcome was recorded (`on_success` / `on_failure`).
    pub(crate) fn settled(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.circuit.abandon_probe();
        }
    }
}

impl Circuit {
    pub(crate) fn new(threshold: u32, base_open: Duration) -> Self {
        Circuit {
            threshold: threshold.max(1),
            base_open: base_open.max(Duration::from_millis(1)),
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            current_open_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        // Starts at 1 so that 0 can mean "closed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    pub(crate) fn permit(&self) -> Permit {
        let until = self.open_until.load(Acquire);
        if until == 0 {
            return Permit::Closed;
        }
        if self.now_ms() < until {
            return Permit::Denied;
        }
        match self.probing.compare_exchange(false, true, AcqRel, Acquire) {
            Ok(_) => Permit::Probe,
            Err(_) => Permit::Denied,
        }
    }

    pub(crate) fn on_success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
        if self.open_until.load(Acquire) != 0 && self.open_until.swap(0, AcqRel) != 0 {
            self.current_open_ms.store(0, Relaxed);
            self.probing.store(false, Release);
            tracing::info!(target: "api_cache", "Redis answers again: circuit closed, caching resumes");
        }
    }

    /// Records a failure; returns true when this failure opened the circuit.
    pub(crate) fn on_failure(&self, was_probe: bool) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, AcqRel) + 1;
        if was_probe {
            let next = (self.current_open_ms.load(Relaxed) * 2).clamp(
                self.base_open.as_millis() as u64,
                MAX_OPEN.as_millis() as u64,
            );
            self.current_open_ms.store(next, Relaxed);
            self.open_until.store(self.now_ms() + next, Release);
            self.probing.store(false, Release);
            tracing::debug!(target: "api_cache", open_for_ms = next, "probe failed: circuit stays open");
            return false;
        }
        if failures >= self.threshold && self.open_until.load(Acquire) == 0 {
            let open_ms = self.base_open.as_millis() as u64;
            let opened = self
                .open_until
                .compare_exchange(0, self.now_ms() + open_ms, AcqRel, Acquire)
                .is_ok();
            if opened {
                self.current_open_ms.store(open_ms, Relaxed);
                tracing::warn!(
                    target: "api_cache",
                    failures,
                    open_for_ms = open_ms,
                    "Redis failing: circuit opened, serving uncached"
                );
            }
            return opened;
        }
        false
    }

    fn abandon_probe(&self) {
        self.probing.store(false, Release);
        tracing::debug!(target: "api_cache", "probe cancelled before Redis answered: the next request probes");
    }

    pub(crate) fn snapshot(&self) -> CircuitSnapshot {
        let until = self.open_until.load(Acquire);
        if until == 0 {
            CircuitSnapshot::Closed
        } else if self.probing.load(Acquire) || self.now_ms() >= until {
            CircuitSnapshot::HalfOpen
        } else {
            CircuitSnapshot::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_backoff() {
        let circuit = Circuit::new(3, Duration::from_millis(20));
        assert!(!circuit.on_failure(false));
        assert!(!circuit.on_failure(false));
        assert!(circuit.on_failure(false));
        assert_eq!(circuit.permit(), Permit::Denied);
        let deadline = Instant::now() + Duration::from_secs(5);
        while circuit.permit() == Permit::Denied {
            assert!(Instant::now() < deadline, "never half-opened");
            std::thread::sleep(Duration::from_millis(2));
        }
        // The permit that left the loop was the probe; nobody else gets one meanwhile.
        assert_eq!(circuit.permit(), Permit::Denied);
        circuit.on_success();
        assert_eq!(circuit.permit(), Permit::Closed);
        assert_eq!(circuit.snapshot(), CircuitSnapshot::Closed);
    }

    #[test]
    fn a_dropped_probe_lets_the_next_request_probe() {
        let circuit = Circuit::new(1, Duration::from_millis(1));
        assert!(circuit.on_failure(false));
        let deadline = Instant::now() + Duration::from_secs(5);
        let permit = loop {
            match circuit.permit() {
                Permit::Denied => {
                    assert!(Instant::now() < deadline, "never half-opened");
                    std::thread::sleep(Duration::from_millis(2));
                }
                permit => break permit,
            }
        };
        assert_eq!(permit, Permit::Probe);
        drop(ProbeGuard::new(&circuit, permit));
        assert_eq!(
            circuit.permit(),
            Permit::Probe,
            "the probe was not handed back"
        );
        let settled = ProbeGuard::new(&circuit, Permit::Probe);
        circuit.on_success();
        settled.settled();
        assert_eq!(circuit.permit(), Permit::Closed);
    }

    /// The back-off of each opening: how long from now the circuit stays open.
    fn open_for(circuit: &Circuit) -> Duration {
        let until = circuit.open_until.load(Acquire);
        assert_ne!(until, 0, "the circuit is closed");
        Duration::from_millis(until.saturating_sub(circuit.now_ms()))
    }

    /// README: after the first back-off (`API_CACHE_CIRCUIT_OPEN_MS`, 1 s) each failed
    /// probe keeps the circuit open twice as long, "2 s, 4 s, ... at most 30 s"; a probe
    /// that succeeds closes it, and the next outage starts from 1 s again.
    #[test]
    fn each_failed_probe_doubles_the_back_off_up_to_30_s() {
        let circuit = Circuit::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            circuit.on_failure(false);
        }
        let mut back_offs = vec![circuit.current_open_ms.load(Relaxed)];
        let within = |expected_ms: u64| {
            let open_for = open_for(&circuit);
            // Milliseconds pass between the failure and this reading; none are added.
            assert!(
                open_for <= Duration::from_millis(expected_ms)
                    && open_for + Duration::from_millis(500) > Duration::from_millis(expected_ms),
                "open for {open_for:?}, expected {expected_ms} ms"
            );
        };
        within(1000);
        for _ in 0..6 {
            assert!(
                !circuit.on_failure(true),
                "a failed probe is not a new opening"
            );
            back_offs.push(circuit.current_open_ms.load(Relaxed));
            within(*back_offs.last().unwrap());
            assert_eq!(circuit.permit(), Permit::Denied);
        }
        assert_eq!(
            back_offs,
            [1000, 2000, 4000, 8000, 16000, 30000, 30000],
            "milliseconds open after the opening and each failed probe"
        );
        circuit.on_success();
        assert_eq!(circuit.permit(), Permit::Closed);
        for _ in 0..3 {
            circuit.on_failure(false);
        }
        assert_eq!(circuit.current_open_ms.load(Relaxed), 1000);
        within(1000);
    }

    #[test]
    fn success_resets_the_failure_count() {
        let circuit = Circuit::new(2, Duration::from_secs(10));
        circuit.on_failure(false);
        circuit.on_success();
        assert!(!circuit.on_failure(false));
        assert_eq!(circuit.permit(), Permit::Closed);
    }
}
