//! A mergeable log-scale histogram for percentiles with a bounded relative error (the scheme of
//! DDSketch, Masson et al., 2019), as GetQualitySummary keeps one per metric in every
//! aggregate cell.
//!
//! A value `v` at or above the histogram's floor falls in bin `i = ceil(ln v / ln γ)`, which
//! covers `(γ^(i-1), γ^i]`; the bin stands for `2γ^i / (γ + 1)`, within `(γ - 1) / (γ + 1)` of
//! every value in it. With γ = 1.02 that is 0.99%: a percentile read from the bins is within 1%
//! of the exact value at its rank. Values below the floor (zero, mostly) share one bin that
//! stands for 0. Counts are exact and can be taken away again (a revised or purged record's
//! values), so cells merge and unmerge without drift.

use std::collections::BTreeMap;

/// The ratio between consecutive bins' bounds.
pub const GAMMA: f64 = 1.02;
/// The most a percentile may be off, relative to the exact value at its rank.
pub const RELATIVE_ERROR: f64 = (GAMMA - 1.0) / (GAMMA + 1.0);
/// The bin of the values below the floor.
const ZERO: i32 = i32::MIN;

/// Counts per bin; bins with no count are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Bin → count (never 0).
    bins: BTreeMap<i32, i64>,
}

/// The bin of `value` for a histogram with `floor`.
pub fn bin_of(value: f64, floor: f64) -> i32 {
    if value.is_nan() || value < floor {
        return ZERO;
    }
    // Within i32 for any finite value: ln(f64::MAX) / ln(1.02) is about 35,800.
    (value.ln() / GAMMA.ln()).ceil() as i32
}

/// The value bin `bin` stands for.
pub fn value_of(bin: i32) -> f64 {
    if bin == ZERO {
        0.0
    } else {
        2.0 * GAMMA.powi(bin) / (GAMMA + 1.0)
    }
}

impl Histogram {
    /// Counts `value` `n` times (`n` negative takes counts away).
    pub fn add(&mut self, value: f64, floor: f64, n: i64) {
        self.add_bin(bin_of(value, floor), n);
    }

    /// Adds `n` to `bin`'s count, dropping the bin when it comes to 0.
    fn add_bin(&mut self, bin: i32, n: i64) {
        let count = self.bins.entry(bin).or_insert(0);
        *count += n;
        if *count == 0 {
            self.bins.remove(&bin);
        }
    }

    /// Adds `other`'s counts `sign` times (1 to merge, -1 to take away).
    pub fn merge(&mut self, other: &Histogram, sign: i64) {
        for (bin, n) in &other.bins {
            self.add_bin(*bin, n * sign);
        }
    }

    /// Appends the histogram to `out`: the number of bins, then each bin's distance from the
    /// one before and its count, as LEB128 varints (zigzag for the distances).
    pub fn encode(&self, out: &mut Vec<u8>) {
        varint(out, self.bins.len() as u64);
        let mut last = 0_i64;
        for (bin, n) in &self.bins {
            let bin = i64::from(*bin);
            varint(out, zigzag(bin - last));
            varint(out, zigzag(*n));
            last = bin;
        }
    }

    /// Reads a histogram [`Histogram::encode`] wrote at the start of `input`, and moves past it.
    pub fn decode(input: &mut &[u8]) -> Option<Histogram> {
        let mut h = Histogram::default();
        let mut bin = 0_i64;
        for _ in 0..read_varint(input)? {
            bin += unzigzag(read_varint(input)?);
            let n = unzigzag(read_varint(input)?);
            h.bins.insert(i32::try_from(bin).ok()?, n);
        }
        Some(h)
    }
}

/// Percentiles over bins merged from many histograms: counts in a dense array over the bins
/// seen so far (grown as needed), so that merging a cell costs an addition per bin it holds.
#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    /// The lowest bin held in `counts`.
    low: i32,
    /// Counts from `low` up.
    counts: Vec<i64>,
    /// Values below the floor.
    zero: i64,
    /// Every value counted.
    total: i64,
}

impl Accumulator {
    /// Adds the histogram encoded at the start of `input` (see [`Histogram::encode`]) and moves
    /// past it; `None` if it is malformed.
    pub fn add_encoded(&mut self, input: &mut &[u8]) -> Option<()> {
        let mut bin = 0_i64;
        for _ in 0..read_varint(input)? {
            bin += unzigzag(read_varint(input)?);
            let n = unzigzag(read_varint(input)?);
            self.add_bin(i32::try_from(bin).ok()?, n);
        }
        Some(())
    }

    /// Adds `n` values in `bin`.
    pub fn add_bin(&mut self, bin: i32, n: i64) {
        self.total += n;
        if bin == ZERO {
            self.zero += n;
            return;
        }
        if self.counts.is_empty() {
            self.low = bin;
        } else if bin < self.low {
            let grow = (self.low - bin) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.low = bin;
        }
        let at = (bin - self.low) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += n;
    }

    /// Every value counted.
    pub fn count(&self) -> i64 {
        self.total
    }

    /// The value at rank `ceil(q × count)` (at least 1) in increasing order, as its bin stands
    /// for it; `None` when nothing is counted.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total <= 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as i64).clamp(1, self.total);
        let mut seen = self.zero;
        if seen >= rank {
            return Some(0.0);
        }
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(value_of(self.low + i as i32));
            }
        }
        None
    }
}

/// Appends `v` as an LEB128 varint.
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an LEB128 varint from the start of `input` and moves past it.
pub fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut v = 0_u64;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = input.split_first()?;
        *input = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A signed value as an unsigned one, small magnitudes small.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// [`zigzag`] undone.
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact value at rank `ceil(q × n)` of `values`.
    fn exact(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    /// Histograms of `values` split in random parts, encoded, merged into an accumulator.
    fn merged(parts: &[Vec<f64>], floor: f64) -> Accumulator {
        let mut acc = Accumulator::default();
        for part in parts {
            let mut h = Histogram::default();
            for v in part {
                h.add(*v, floor, 1);
            }
            let mut bytes = Vec::new();
            h.encode(&mut bytes);
            let mut input = &bytes[..];
            acc.add_encoded(&mut input).expect("decodes");
            assert!(input.is_empty());
        }
        acc
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// On random data of several shapes (uniform, log-uniform over many decades, heavy
        /// clusters and zeros), every percentile read from merged histograms is within 1% of
        /// the exact one.
        #[test]
        fn percentiles_are_within_one_percent_of_the_exact_ones(
            shape in 0_u8..4,
            seeds in prop::collection::vec(0.0_f64..1.0, 1..2000),
            cut in 1_usize..7,
        ) {
            let (floor, ceiling) = (1e-5_f64, 5.0_f64);
            let values: Vec<f64> = seeds.iter().enumerate().map(|(i, u)| match shape {
                0 => u * ceiling,
                1 => floor * (ceiling / floor).powf(*u),
                2 => if i % 3 == 0 { 0.0 } else { 1.0 + (u * 4.0).floor() / 100.0 },
                _ => if *u < 0.2 { 0.0 } else { 0.01 + u * 0.3 },
            }).collect();
            let parts: Vec<Vec<f64>> = values.chunks(values.len().div_ceil(cut)).map(<[f64]>::to_vec).collect();
            let acc = merged(&parts, floor);
            prop_assert_eq!(acc.count(), values.len() as i64);
            for q in [0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
                let want = exact(&values, q);
                let got = acc.quantile(q).expect("some");
                if want < floor {
                    prop_assert_eq!(got, 0.0);
                } else {
                    prop_assert!((got - want).abs() <= RELATIVE_ERROR * want + 1e-12,
                        "q {q}: {got} for {want}");
                    prop_assert!(RELATIVE_ERROR < 0.01);
                }
            }
        }

        /// Taking a part away again leaves exactly the histogram of the rest.
        #[test]
        fn taking_values_away_undoes_adding_them(
            a in prop::collection::vec(0.0_f64..1e9, 0..200),
            b in prop::collection::vec(0.0_f64..1e9, 0..200),
        ) {
            let of = |values: &[f64]| {
                let mut h = Histogram::default();
                for v in values {
                    h.add(*v, 1.0, 1);
                }
                h
            };
            let mut both = of(&a);
            both.merge(&of(&b), 1);
            both.merge(&of(&b), -1);
            prop_assert_eq!(&both, &of(&a));
            let mut bytes = Vec::new();
            both.encode(&mut bytes);
            prop_assert_eq!(Histogram::decode(&mut &bytes[..]), Some(both));
        }
    }

    #[test]
    fn a_truncated_encoding_is_refused() {
        let mut h = Histogram::default();
        h.add(3.0, 1.0, 5);
        h.add(300.0, 1.0, 2);
        let mut bytes = Vec::new();
        h.encode(&mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(Histogram::decode(&mut &bytes[..cut]), None, "cut at {cut}");
        }
    }
}
