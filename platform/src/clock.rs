//! Noticing that the guest's clock needs setting again: after the host slept
//! (a laptop lid closed) the VM was paused with it and its clock lags, and
//! after the host's clock was stepped the two disagree. Both show as the
//! wall clock moving by a different amount than the monotonic clock, which
//! stops during sleep on Linux, macOS and Windows alike.

use std::time::{Duration, Instant, SystemTime};

/// Watches the host's clocks between two looks.
#[derive(Debug)]
pub struct ClockWatch {
    wall: SystemTime,
    monotonic: Instant,
    tolerance: Duration,
}

impl ClockWatch {
    /// A watch that reports differences larger than `tolerance`.
    pub fn new(wall: SystemTime, monotonic: Instant, tolerance: Duration) -> Self {
        Self {
            wall,
            monotonic,
            tolerance,
        }
    }

    /// Takes a look at both clocks; true when the wall clock moved by more
    /// than `tolerance` beyond (or before) the monotonic clock since the last
    /// look: the guest's clock should be set again.
    pub fn jumped(&mut self, wall: SystemTime, monotonic: Instant) -> bool {
        let mono_step = monotonic.saturating_duration_since(self.monotonic);
        let differs = match wall.duration_since(self.wall) {
            Ok(wall_step) => wall_step.abs_diff(mono_step) > self.tolerance,
            // The wall clock went back.
            Err(back) => back.duration() + mono_step > self.tolerance,
        };
        self.wall = wall;
        self.monotonic = monotonic;
        differs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_and_steps_are_noticed_and_steady_time_is_not() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mono = Instant::now();
        let mut w = ClockWatch::new(wall, mono, Duration::from_secs(2));
        let s = Duration::from_secs;
        // Ten seconds on both clocks: nothing to do.
        assert!(!w.jumped(wall + s(10), mono + s(10)));
        // A little drift stays within the tolerance.
        assert!(!w.jumped(wall + s(21), mono + s(20)));
        // The host slept for an hour: the wall clock ran on, the monotonic one did not.
        assert!(w.jumped(wall + s(3_630), mono + s(30)));
        // Back to steady.
        assert!(!w.jumped(wall + s(3_640), mono + s(40)));
        // The host's clock was stepped back by a minute.
        assert!(w.jumped(wall + s(3_590), mono + s(50)));
    }
}
