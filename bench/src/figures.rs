//! The benchmark's table: each figure, the limit it is compared with, the ratio, the target.

/// What a figure has to reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The ratio OCX ÷ limit is at least this (rates).
    RatioAtLeast(f64),
    /// The ratio OCX ÷ limit is at most this (times).
    RatioAtMost(f64),
    /// The value itself is below this, in the figure's unit.
    Below(f64, &'static str),
    /// Shown for information; no target.
    None,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What is measured.
    pub name: String,
    /// OCX's value, with its unit.
    pub ocx: String,
    /// The limit's value, with its unit (empty when there is none).
    pub limit: String,
    /// OCX ÷ limit.
    pub ratio: Option<f64>,
    /// What it has to reach.
    pub target: Target,
    /// The value checked against a [`Target::Below`].
    pub value: Option<f64>,
}

impl Figure {
    /// A figure compared with a limit measured in the same run.
    pub fn ratio(
        name: impl Into<String>,
        ocx: f64,
        limit: f64,
        unit: &str,
        target: Target,
    ) -> Figure {
        Figure {
            name: name.into(),
            ocx: format!("{} {unit}", human(ocx)),
            limit: format!("{} {unit}", human(limit)),
            ratio: (limit > 0.0).then(|| ocx / limit),
            target,
            value: None,
        }
    }

    /// The same figure with `suffix` added to its name.
    pub fn named(mut self, suffix: &str) -> Figure {
        self.name.push_str(suffix);
        self
    }

    /// A figure with no limit, checked against an absolute target (or none).
    pub fn value(name: impl Into<String>, shown: String, value: f64, target: Target) -> Figure {
        Figure {
            name: name.into(),
            ocx: shown,
            limit: String::new(),
            ratio: None,
            target,
            value: Some(value),
        }
    }

    /// A figure shown for information: no limit, no target.
    pub fn info(name: impl Into<String>, shown: String) -> Figure {
        Figure {
            name: name.into(),
            ocx: shown,
            limit: String::new(),
            ratio: None,
            target: Target::None,
            value: None,
        }
    }

    /// Whether the target is met; `None` when there is none (or nothing to check).
    pub fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtLeast(t) => self.ratio.map(|r| r >= t),
            Target::RatioAtMost(t) => self.ratio.map(|r| r <= t),
            Target::Below(t, _) => self.value.map(|v| v < t),
            Target::None => None,
        }
    }
}

/// Rates and counts with thousands separators; small values with two decimals.
pub fn human(x: f64) -> String {
    if x.abs() >= 100.0 {
        let digits = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 { format!("-{out}") } else { out }
    } else {
        format!("{x:.2}")
    }
}

/// Prints the figures as a Markdown table (as docs/BENCHMARKS.md holds it).
pub fn print_table(figures: &[Figure]) {
    println!("| figure | OCX | limit | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for f in figures {
        let target = match f.target {
            Target::RatioAtLeast(t) => format!("≥ {t}"),
            Target::RatioAtMost(t) => format!("≤ {t}"),
            Target::Below(t, unit) => format!("< {t} {unit}"),
            Target::None => String::new(),
        };
        let ratio = f.ratio.map(|r| format!("{r:.2}")).unwrap_or_default();
        let met = match f.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!(
            "| {} | {} | {} | {ratio} | {target} | {met} |",
            f.name, f.ocx, f.limit
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers_and_targets() {
        assert_eq!(human(1_234_567.4), "1,234,567");
        assert_eq!(human(999.0), "999");
        assert_eq!(human(0.5), "0.50");
        let f = Figure::ratio("r", 7.0, 10.0, "x/s", Target::RatioAtLeast(0.7));
        assert_eq!(f.met(), Some(true));
        let f = Figure::ratio("r", 12.0, 10.0, "s", Target::RatioAtMost(1.1));
        assert_eq!(f.met(), Some(false));
        let f = Figure::value("m", "151 MiB".into(), 151.0, Target::Below(150.0, "MiB"));
        assert_eq!(f.met(), Some(false));
    }
}
