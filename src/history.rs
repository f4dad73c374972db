//! Bounded in-memory history: one compact sample per subject (a process, or
//! on a server an agent) per tick, for the last `capacity` ticks. The cost
//! is fixed: 8 bytes per sample, so `capacity` × 8 bytes per subject, plus
//! 8 bytes per tick for the shared timestamps. Nothing here is stored on
//! disk: history starts again with the daemon. A leaf: no I/O, no clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

/// One sample, packed: CPU in tenths of a percent of one core (saturating
/// at 6553.5 %), memory in KiB (up to 4 TiB), and a count (a process's
/// restarts, an agent's online processes), saturating at 65,535.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    cpu_x10: u16,
    count: u16,
    mem_kib: u32,
}

impl Sample {
    pub fn new(cpu_percent: f32, memory_bytes: u64, count: u64) -> Sample {
        Sample {
            cpu_x10: (cpu_percent.max(0.0) * 10.0)
                .round()
                .min(f32::from(u16::MAX)) as u16,
            count: count.min(u64::from(u16::MAX)) as u16,
            mem_kib: (memory_bytes / 1024).min(u64::from(u32::MAX)) as u32,
        }
    }

    pub fn cpu_percent(&self) -> f32 {
        f32::from(self.cpu_x10) / 10.0
    }

    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.mem_kib) * 1024
    }

    pub fn count(&self) -> u32 {
        u32::from(self.count)
    }
}

/// The samples of one subject, as they cross the wire: four arrays of the
/// same length, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub at_ms: Vec<u64>,
    pub cpu: Vec<f32>,
    pub memory: Vec<u64>,
    /// Restarts of a process; online processes of an agent.
    pub count: Vec<u32>,
}

struct Ring {
    /// The tick of the newest sample.
    last_tick: u64,
    samples: VecDeque<Sample>,
}

/// Every subject's last `capacity` samples.
pub struct History<K> {
    capacity: usize,
    /// Ticks recorded so far.
    ticks: u64,
    /// When each of the last `capacity` ticks was taken (ms since the epoch).
    tick_times: VecDeque<u64>,
    rings: HashMap<K, Ring>,
}

impl<K: Hash + Eq + Clone> History<K> {
    pub fn new(capacity: usize) -> History<K> {
        let capacity = capacity.max(1);
        History {
            capacity,
            ticks: 0,
            tick_times: VecDeque::with_capacity(capacity),
            rings: HashMap::new(),
        }
    }

    /// Records one tick taken at `at_ms`: a sample for each subject given.
    /// A subject not given is gone (removed), and its history with it.
    pub fn record(&mut self, at_ms: u64, samples: impl IntoIterator<Item = (K, Sample)>) {
        let tick = self.ticks;
        self.ticks += 1;
        if self.tick_times.len() == self.capacity {
            self.tick_times.pop_front();
        }
        self.tick_times.push_back(at_ms);
        let capacity = self.capacity;
        let mut seen = std::collections::HashSet::new();
        for (key, sample) in samples {
            let ring = self.rings.entry(key.clone()).or_insert_with(|| Ring {
                last_tick: tick,
                samples: VecDeque::with_capacity(capacity),
            });
            if ring.samples.len() == capacity {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample);
            ring.last_tick = tick;
            seen.insert(key);
        }
        self.rings.retain(|k, _| seen.contains(k));
    }

    /// The samples of one subject, oldest first, with their times.
    pub fn series(&self, key: &K) -> Option<Series> {
        let ring = self.rings.get(key)?;
        let n = ring.samples.len();
        let mut s = Series {
            at_ms: Vec::with_capacity(n),
            cpu: Vec::with_capacity(n),
            memory: Vec::with_capacity(n),
            count: Vec::with_capacity(n),
        };
        // tick_times holds ticks [ticks - len, ticks).
        let first_kept = self.ticks - self.tick_times.len() as u64;
        for (i, sample) in ring.samples.iter().enumerate() {
            let tick = ring.last_tick + 1 + i as u64 - n as u64;
            let at = tick
                .checked_sub(first_kept)
                .and_then(|j| self.tick_times.get(j as usize))
                .copied()
                .unwrap_or(0);
            s.at_ms.push(at);
            s.cpu.push(sample.cpu_percent());
            s.memory.push(sample.memory_bytes());
            s.count.push(sample.count());
        }
        Some(s)
    }

    /// Subjects with history.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Bytes held at most per subject once its history is full.
    pub fn bytes_per_subject(&self) -> usize {
        self.capacity * std::mem::size_of::<Sample>() + std::mem::size_of::<Ring>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Sample>(), 8);
    }

    #[test]
    fn samples_keep_a_tenth_of_a_percent_and_a_kib() {
        let s = Sample::new(12.34, 10 * 1024 * 1024 + 100, 3);
        assert_eq!(s.cpu_percent(), 12.3);
        assert_eq!(s.memory_bytes(), 10 * 1024 * 1024);
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn samples_saturate_instead_of_wrapping() {
        let s = Sample::new(1e9, u64::MAX, u64::MAX);
        assert_eq!(s.cpu_percent(), 6553.5);
        assert_eq!(s.count(), 65_535);
        assert_eq!(s.memory_bytes(), u64::from(u32::MAX) * 1024);
        assert_eq!(Sample::new(-1.0, 0, 0).cpu_percent(), 0.0);
    }

    #[test]
    fn a_history_keeps_the_last_samples_with_their_times() {
        let mut h = History::new(3);
        for t in 0..5u64 {
            h.record(1000 + t, [(1u64, Sample::new(t as f32, 0, t))]);
        }
        let s = h.series(&1).expect("series");
        assert_eq!(s.at_ms, vec![1002, 1003, 1004]);
        assert_eq!(s.count, vec![2, 3, 4]);
    }

    #[test]
    fn a_subject_that_joins_later_has_only_its_own_ticks() {
        let mut h = History::new(10);
        h.record(10, [(1u64, Sample::default())]);
        h.record(20, [(1u64, Sample::default()), (2, Sample::new(5.0, 0, 0))]);
        h.record(30, [(1u64, Sample::default()), (2, Sample::new(6.0, 0, 0))]);
        let s = h.series(&2).expect("series");
        assert_eq!(s.at_ms, vec![20, 30]);
        assert_eq!(s.cpu, vec![5.0, 6.0]);
        assert_eq!(h.series(&1).expect("one").at_ms, vec![10, 20, 30]);
    }

    #[test]
    fn a_subject_that_is_gone_loses_its_history() {
        let mut h = History::new(10);
        h.record(10, [(1u64, Sample::default()), (2, Sample::default())]);
        h.record(20, [(1u64, Sample::default())]);
        assert!(h.series(&2).is_none());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn the_cost_per_subject_is_fixed_by_the_capacity() {
        let h: History<u64> = History::new(360);
        assert!(h.bytes_per_subject() >= 360 * 8);
        assert!(h.bytes_per_subject() < 360 * 8 + 64);
    }
}
