//! Time and latency: the process clock, kernel receive timestamps on it, and the latency histogram.

use super::*;

// Clock

pub(crate) static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide base instant (the `"t"` field of every payload).
pub(crate) fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The wall clock (`CLOCK_REALTIME`, the kernel's receive timestamps) minus [`now_ns`], from the
/// closest of a few paired readings.
pub(crate) static REALTIME_OFFSET: OnceLock<i128> = OnceLock::new();

pub(crate) fn realtime_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// A kernel receive timestamp (wall clock) on the [`now_ns`] scale.
pub(crate) fn from_realtime(ts: &nix::sys::time::TimeSpec) -> u64 {
    let offset = *REALTIME_OFFSET.get_or_init(|| {
        (0..9)
            .map(|_| {
                let a = now_ns();
                let r = realtime_ns();
                let b = now_ns();
                (b - a, r - (a as i128 + (b - a) as i128 / 2))
            })
            .min_by_key(|&(gap, _)| gap)
            .map_or(0, |(_, off)| off)
    });
    let real = ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128;
    (real - offset).max(0) as u64
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear, 64 sub-buckets per power of two (values in ns).

pub(crate) const SUB_BITS: u32 = 6;
pub(crate) const SUB: u64 = 1 << SUB_BITS;

pub(crate) struct Hist {
    pub(crate) counts: Vec<u64>,
    pub(crate) total: u64,
    pub(crate) max: u64,
}

impl Hist {
    pub(crate) fn new() -> Hist {
        Hist { counts: vec![0; ((64 - SUB_BITS as usize) + 1) * SUB as usize], total: 0, max: 0 }
    }

    pub(crate) fn index(v: u64) -> usize {
        if v < SUB {
            v as usize
        } else {
            let exp = 63 - v.leading_zeros();
            let shift = exp - SUB_BITS;
            (((exp - SUB_BITS + 1) as u64) * SUB + ((v >> shift) & (SUB - 1))) as usize
        }
    }

    /// The largest value that falls into bucket `i`.
    pub(crate) fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            i
        } else {
            let exp = i / SUB + SUB_BITS as u64 - 1;
            let sub = i % SUB;
            let shift = exp - SUB_BITS as u64;
            ((SUB + sub) << shift) + (1u64 << shift) - 1
        }
    }

    pub(crate) fn record(&mut self, v: u64) {
        self.counts[Hist::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Hist::upper(i).min(self.max);
            }
        }
        self.max
    }
}
