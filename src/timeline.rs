//! The phases of a run and how long each took, printed by `buildr run -v`: where the time of a
//! run goes (pod start, copies, task, fetch) is the first question when one is slow.

use std::fmt;
use std::time::{Duration, Instant};

/// Named phases in the order they ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    phases: Vec<(String, Duration)>,
}

impl Timeline {
    /// Records `name` as the phase from `*since` to now, and starts the next one now.
    pub fn record(&mut self, name: &str, since: &mut Instant) {
        let now = Instant::now();
        self.phases.push((name.to_string(), now - *since));
        *since = now;
    }

    /// Appends another timeline's phases after this one's.
    pub fn extend(&mut self, other: Timeline) {
        self.phases.extend(other.phases);
    }

    pub fn phases(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.phases
            .iter()
            .map(|(name, took)| (name.as_str(), *took))
    }
}

impl fmt::Display for Timeline {
    /// One line per phase, then the total: `  copy inputs      0.213s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.phases.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut total = Duration::ZERO;
        for (name, took) in &self.phases {
            writeln!(f, "  {name:<width$}  {:>8.3}s", took.as_secs_f64())?;
            total += *took;
        }
        write!(f, "  {:<width$}  {:>8.3}s", "total", total.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_each_other_and_add_up() {
        let mut timeline = Timeline::default();
        let mut since = Instant::now() - Duration::from_millis(1500);
        timeline.record("create", &mut since);
        timeline.record("copy", &mut since);
        let phases: Vec<_> = timeline.phases().collect();
        assert_eq!(phases[0].0, "create");
        assert!(phases[0].1 >= Duration::from_millis(1500));
        assert!(phases[1].1 < Duration::from_millis(500));
        let shown = timeline.to_string();
        assert!(shown.starts_with("  create  "), "{shown}");
        assert!(
            shown.lines().last().unwrap().starts_with("  total   "),
            "{shown}"
        );
    }
}
